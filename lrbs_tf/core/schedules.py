"""Schedules: pure functions of training progress, measured in epochs, for η, S or η/S.

Progress ``t`` is in epochs (per data point: ``t = epoch + examples_seen / N``), as in the paper;
:func:`lrbs_tf.core.plan.epoch_batch_sizes` is the one place where it meets steps: it evaluates
the schedules at the start of each batch. Every schedule is a frozen dataclass with
``__call__(t) -> float`` and a ``spec`` string that :func:`parse_schedule` turns back into it.

Command-line syntax (``--lr-schedule``, ``--bs-schedule``, ``--ratio-schedule``); ``BASE`` may be
left empty to use the base value from ``--ratio``/``--lr``/``--batch-size``:

================================  =============================================================
``const:V`` or ``V``              constant V
``cyclic:A,B:E``                  square wave: A for E epochs, then B for E epochs, repeat
``tri:A,B:E``                     triangle: A → B linearly over E epochs, back to A over E
``milestones:BASE@E1,E2[xF]``     BASE, multiplied by F (default 0.1) at each epoch Ei
``divide:BASE:K[:D]``             BASE divided by D (default 2) every K epochs
``warmup:E:INNER``                INNER scaled linearly from 0 at t=0 to 1 at t=E
``adaptive[:MAX]``                batch sizes only: grown during training from the measured
                                  noise scale at a fixed η/S (:mod:`lrbs_tf.probes.growth`)
================================  =============================================================

Examples: ``--bs-schedule cyclic:640,128:4`` (the paper's cyclic batch size, starting in the
low-noise stage S=640), ``--lr-schedule cyclic:0.001,0.005:4``,
``--lr-schedule milestones:0.1@60,100,140,180`` (ResNet56), ``--lr-schedule divide:0.1:25``
(VGG11), ``--lr-schedule warmup:5:const:0.4``.

"Grow S instead of decaying η" (Smith et al. 2018) is :func:`grow_batch_instead`: it turns a
decaying η schedule into a growing batch-size schedule with the same η/S at every point.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

__all__ = [
    "AdaptiveBatch",
    "Constant",
    "SquareWave",
    "Triangle",
    "Milestones",
    "DivideEvery",
    "Warmup",
    "GrowBatch",
    "grow_batch_instead",
    "parse_schedule",
    "ScheduleError",
]


class ScheduleError(ValueError):
    """A schedule spec that cannot be parsed; the message is one line."""


def _check_t(t: float) -> float:
    if t < 0:
        raise ValueError(f"progress must be >= 0 epochs, got {t}")
    return t


@dataclasses.dataclass(frozen=True)
class Constant:
    value: float

    def __call__(self, t: float) -> float:
        _check_t(t)
        return self.value

    @property
    def spec(self) -> str:
        return f"const:{self.value:g}"


@dataclasses.dataclass(frozen=True)
class SquareWave:
    """``first`` for ``stage`` epochs, then ``second`` for ``stage`` epochs, and so on."""

    first: float
    second: float
    stage: float

    def __call__(self, t: float) -> float:
        stage_index = math.floor(_check_t(t) / self.stage + 1e-9)
        return self.first if stage_index % 2 == 0 else self.second

    @property
    def spec(self) -> str:
        return f"cyclic:{self.first:g},{self.second:g}:{self.stage:g}"


@dataclasses.dataclass(frozen=True)
class Triangle:
    """Linear from ``first`` to ``second`` over ``stage`` epochs, then back, and so on."""

    first: float
    second: float
    stage: float

    def __call__(self, t: float) -> float:
        phase = (_check_t(t) / self.stage) % 2.0
        frac = phase if phase <= 1.0 else 2.0 - phase
        return self.first + (self.second - self.first) * frac

    @property
    def spec(self) -> str:
        return f"tri:{self.first:g},{self.second:g}:{self.stage:g}"


@dataclasses.dataclass(frozen=True)
class Milestones:
    """``base × factor^k`` where k is the number of milestones already reached (t ≥ Ei)."""

    base: float
    milestones: tuple
    factor: float = 0.1

    def __call__(self, t: float) -> float:
        _check_t(t)
        reached = sum(1 for m in self.milestones if t >= m - 1e-9)
        return self.base * self.factor**reached

    @property
    def spec(self) -> str:
        return (
            f"milestones:{self.base:g}@{','.join(f'{m:g}' for m in self.milestones)}"
            f"x{self.factor:g}"
        )


@dataclasses.dataclass(frozen=True)
class DivideEvery:
    """``base / divisor^floor(t / every)``."""

    base: float
    every: float
    divisor: float = 2.0

    def __call__(self, t: float) -> float:
        return self.base / self.divisor ** math.floor(_check_t(t) / self.every + 1e-9)

    @property
    def spec(self) -> str:
        return f"divide:{self.base:g}:{self.every:g}:{self.divisor:g}"


@dataclasses.dataclass(frozen=True)
class Warmup:
    """``inner(t) × min(1, t / epochs)``: a linear warm-up over ``epochs``."""

    epochs: float
    inner: Callable

    def __call__(self, t: float) -> float:
        return self.inner(t) * min(1.0, _check_t(t) / self.epochs)

    @property
    def spec(self) -> str:
        return f"warmup:{self.epochs:g}:{self.inner.spec}"


@dataclasses.dataclass
class AdaptiveBatch:
    """A batch size decided during training (``--bs-schedule adaptive[:MAX]``): ``start`` until
    the first decision, then the last size decided for an epoch at or before ``t``
    (:class:`lrbs_tf.probes.growth.BatchGrowth` decides, at a fixed η/S)."""

    start: int
    maximum: int | None = None
    decided: dict = dataclasses.field(default_factory=dict)  # epoch (0-based) -> S

    def __call__(self, t: float) -> float:
        epoch = math.floor(_check_t(t) + 1e-9)
        known = [e for e in self.decided if e <= epoch]
        return float(self.decided[max(known)] if known else self.start)

    @property
    def spec(self) -> str:
        return "adaptive" + (f":{self.maximum}" if self.maximum else "")


@dataclasses.dataclass(frozen=True)
class GrowBatch:
    """Batch size ``round(base_batch × lr(0) / lr(t))``: grows where ``lr`` would decay."""

    lr: Callable
    base_batch: int

    def __call__(self, t: float) -> float:
        return max(1, round(self.base_batch * self.lr(0.0) / self.lr(t)))

    @property
    def spec(self) -> str:
        return f"grow({self.base_batch}):{self.lr.spec}"


def grow_batch_instead(lr_schedule, base_batch: int):
    """Replace a decaying η schedule by (constant η = lr(0), growing S) with the same η/S.

    Returns ``(lr, batch)`` schedules with ``lr(t)/batch(t) == lr_schedule(t)/base_batch`` up to
    rounding S to an integer (Smith, Kindermans, Ying & Le 2018).
    """
    return Constant(lr_schedule(0.0)), GrowBatch(lr_schedule, int(base_batch))


def _num(text: str, what: str, base: float | None = None) -> float:
    text = text.strip()
    if text == "" and base is not None:
        return base
    try:
        value = float(text)
    except ValueError:
        raise ScheduleError(f"{what} must be a number, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ScheduleError(f"{what} must be a positive finite number, got {text!r}")
    return value


MAX_NESTING = 8


def parse_schedule(spec: str, base: float | None = None, _depth: int = 0):
    """Parse a schedule spec (see the module docstring); ``base`` fills an empty BASE."""
    if _depth > MAX_NESTING:
        raise ScheduleError(f"schedules nest at most {MAX_NESTING} deep (warmup:E:...)")
    spec = str(spec).strip()
    kind, _, rest = spec.partition(":")
    try:
        if kind == "adaptive":
            if base is None:
                raise ScheduleError(
                    "adaptive needs the starting batch size (--batch-size, or --ratio LR/BATCH)"
                )
            maximum = int(_num(rest, "adaptive maximum batch size")) if rest else None
            return AdaptiveBatch(int(base), maximum)
        if not rest and kind not in ("const", "cyclic", "tri", "milestones", "divide", "warmup"):
            return Constant(_num(kind, "constant schedule value", base))
        if kind == "const":
            return Constant(_num(rest, "constant value", base))
        if kind in ("cyclic", "tri"):
            values, _, stage = rest.partition(":")
            parts = values.split(",")
            if len(parts) != 2 or not stage:
                raise ScheduleError(f"{kind} needs A,B:EPOCHS, got {spec!r}")
            a, b = (_num(p, f"{kind} value") for p in parts)
            cls = SquareWave if kind == "cyclic" else Triangle
            return cls(a, b, _num(stage, f"{kind} stage length (epochs)"))
        if kind == "milestones":
            head, at, tail = rest.partition("@")
            if not at:
                raise ScheduleError(f"milestones needs BASE@E1,E2,...[xFACTOR], got {spec!r}")
            epochs_text, _, factor_text = tail.partition("x")
            epochs = tuple(_num(e, "milestone epoch") for e in epochs_text.split(","))
            if list(epochs) != sorted(epochs):
                raise ScheduleError(f"milestone epochs must increase, got {epochs_text!r}")
            factor = _num(factor_text, "milestone factor") if factor_text else 0.1
            return Milestones(_num(head, "milestones base", base), epochs, factor)
        if kind == "divide":
            parts = rest.split(":")
            if len(parts) not in (2, 3):
                raise ScheduleError(f"divide needs BASE:K[:DIVISOR], got {spec!r}")
            divisor = _num(parts[2], "divisor") if len(parts) == 3 else 2.0
            return DivideEvery(
                _num(parts[0], "divide base", base), _num(parts[1], "K (epochs)"), divisor
            )
        if kind == "warmup":
            epochs, _, inner = rest.partition(":")
            if not inner:
                raise ScheduleError(f"warmup needs EPOCHS:INNER_SCHEDULE, got {spec!r}")
            return Warmup(_num(epochs, "warm-up epochs"), parse_schedule(inner, base, _depth + 1))
    except ScheduleError:
        raise
    raise ScheduleError(
        f"unknown schedule {kind!r} in {spec!r}; use const, cyclic, tri, "
        "milestones, divide or warmup"
    )
