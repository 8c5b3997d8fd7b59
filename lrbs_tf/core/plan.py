"""A training plan: η, S and η/S as schedules of progress, turned into per-epoch batch lists.

Two of the three quantities are given and the third follows from η = (η/S)·S:

* S(t) comes from the batch-size schedule (constant S0 if none);
* η/S comes from a ratio schedule, or from an η schedule as η(t)/S(t), or stays η0/S0 when
  only S is scheduled and ``keep_ratio`` is set; otherwise η stays η0 while S moves (the
  paper's cyclic batch size at constant η).

Per step the optimizer receives η/S and multiplies by the real global batch, so a ragged last
batch keeps the scheduled ratio. Pure Python: usable for validation before TensorFlow loads.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from collections.abc import Callable
from typing import NamedTuple

from lrbs_tf.core.ratio import FLOAT32_MAX
from lrbs_tf.core.schedules import (
    AdaptiveBatch,
    Constant,
    ScheduleError,
    grow_batch_instead,
    parse_schedule,
)


def epoch_batch_sizes(
    num_examples: int, size_at: Callable[[float], int] | int, epoch: int, min_batch: int = 1
) -> list[int]:
    """Batch sizes of epoch ``epoch`` (0-based): ``size_at(epoch + seen/num_examples)`` per batch.

    A last batch smaller than ``min_batch`` joins the one before it (under a ``tf.distribute``
    strategy every replica needs at least one example: an empty replica batch gives
    BatchNormalization NaNs).

    >>> epoch_batch_sizes(10, 4, 0)
    [4, 4, 2]
    >>> epoch_batch_sizes(9, 4, 0, min_batch=2)
    [4, 5]
    """
    sizes = _raw_sizes(num_examples, size_at, epoch)
    if len(sizes) > 1 and sizes[-1] < min_batch:
        sizes[-2:] = [sizes[-2] + sizes[-1]]
    return sizes


def _raw_sizes(num_examples, size_at, epoch) -> list[int]:
    if isinstance(size_at, int):
        full, rest = divmod(num_examples, int(size_at))
        return [int(size_at)] * full + ([rest] if rest else [])
    sizes, seen = [], 0
    while seen < num_examples:
        size = int(size_at(epoch + seen / num_examples))
        if size <= 0:
            raise ValueError(
                f"batch size schedule gave {size} at epoch {epoch + seen / num_examples:g}"
            )
        size = min(size, num_examples - seen)
        sizes.append(size)
        seen += size
    return sizes


@dataclasses.dataclass(frozen=True)
class TrainingPlan:
    batch: Callable  # S(t), rounded to an integer ≥ 1
    lr: Callable | None = None  # η(t); exactly one of lr / ratio is set
    ratio: Callable | None = None  # η/S(t)

    def batch_at(self, t: float) -> int:
        return max(1, int(round(self.batch(t))))

    def ratio_at(self, t: float) -> float:
        if self.ratio is not None:
            return float(self.ratio(t))
        return float(self.lr(t)) / self.batch_at(t)

    def epoch(
        self, num_examples: int, epoch: int, min_batch: int = 1
    ) -> tuple[list[int], list[float]]:
        """Batch sizes and η/S of every step of ``epoch``, each evaluated at the batch's start;
        a last batch under ``min_batch`` examples joins the one before it."""
        sizes = epoch_batch_sizes(num_examples, self.batch_at, epoch, min_batch)
        starts = [0] + list(itertools.accumulate(sizes))[:-1]
        return sizes, [self.ratio_at(epoch + seen / num_examples) for seen in starts]

    def check(self, epochs: int, num_examples: int) -> None:
        """Evaluate the schedules at 20 points per epoch (at most 20000): finite, η/S ≥ 0 (0 at
        the start of a warm-up) and somewhere > 0, batch sizes from 1 to ``num_examples``;
        raises :class:`ScheduleError`."""
        points = min(20 * epochs, 20000)
        t, positive = 0.0, False
        try:
            for i in range(points):
                t = epochs * i / points
                raw = float(self.batch(t))
                if not math.isfinite(raw) or raw < 1:
                    raise ScheduleError(
                        f"the batch-size schedule gives {raw:g} at epoch {t:g}: "
                        "a batch size must be at least 1"
                    )
                size = self.batch_at(t)
                if size > num_examples:
                    raise ScheduleError(
                        f"the batch-size schedule reaches {size} at epoch "
                        f"{t:g}, more than the training set ({num_examples} "
                        "examples)"
                    )
                ratio = self.ratio_at(t)
                if not 0 <= ratio < math.inf or not ratio * size < math.inf:
                    raise ScheduleError(
                        f"the schedules give η/S = {ratio:g} at epoch {t:g}: it "
                        "must be finite and not negative"
                    )
                if ratio * size > FLOAT32_MAX:
                    raise ScheduleError(
                        f"the schedules give η = {ratio * size:g} at epoch {t:g}: it overflows "
                        f"float32, in which the optimizer holds it (at most {FLOAT32_MAX:.3g})"
                    )
                positive = positive or ratio > 0
        except ScheduleError:
            raise
        except (OverflowError, ZeroDivisionError, ValueError) as e:
            raise ScheduleError(
                f"the schedules cannot be evaluated at epoch {t:g} ({e}): a value overflows"
            ) from None
        if not positive:
            raise ScheduleError("the schedules give η/S = 0 throughout: nothing would train")

    @property
    def adaptive(self) -> AdaptiveBatch | None:
        """The batch-size schedule when it is decided during training."""
        return self.batch if isinstance(self.batch, AdaptiveBatch) else None

    def is_constant(self) -> bool:
        """Are S and η/S the same at every step (so every epoch has the same plan)?"""
        return isinstance(self.batch, Constant) and isinstance(self.ratio or self.lr, Constant)

    def describe(self) -> dict:
        out = {"batch_schedule": getattr(self.batch, "spec", repr(self.batch))}
        if self.lr is not None:
            out["lr_schedule"] = getattr(self.lr, "spec", repr(self.lr))
        if self.ratio is not None:
            out["ratio_schedule"] = getattr(self.ratio, "spec", repr(self.ratio))
        return out


def make_plan(
    lr: float,
    batch_size: int,
    lr_schedule: str | None = None,
    bs_schedule: str | None = None,
    ratio_schedule: str | None = None,
    keep_ratio: bool = False,
    grow_batch: bool = False,
) -> TrainingPlan:
    """Build a plan from base η0, S0 and optional schedule specs
    (see :mod:`lrbs_tf.core.schedules`)."""
    if lr_schedule and ratio_schedule:
        raise ScheduleError("give --lr-schedule or --ratio-schedule, not both")
    if keep_ratio and not bs_schedule:
        raise ScheduleError("--keep-ratio needs --bs-schedule")
    if keep_ratio and (lr_schedule or ratio_schedule):
        raise ScheduleError("--keep-ratio conflicts with an η or η/S schedule")
    if grow_batch and (not lr_schedule or bs_schedule):
        raise ScheduleError(
            "--grow-batch turns an --lr-schedule into a batch-size schedule; "
            "give --lr-schedule and no --bs-schedule"
        )
    batch = parse_schedule(bs_schedule, base=batch_size) if bs_schedule else Constant(batch_size)
    if isinstance(batch, AdaptiveBatch):
        if lr_schedule or ratio_schedule or grow_batch:
            raise ScheduleError(
                "--bs-schedule adaptive keeps η/S fixed: drop the η and η/S "
                "schedules and --grow-batch"
            )
        return TrainingPlan(batch, ratio=Constant(lr / batch_size))
    if ratio_schedule:
        return TrainingPlan(batch, ratio=parse_schedule(ratio_schedule, base=lr / batch_size))
    if lr_schedule:
        lr_fn = parse_schedule(lr_schedule, base=lr)
        if grow_batch:
            lr_fn, batch = grow_batch_instead(lr_fn, batch_size)
        return TrainingPlan(batch, lr=lr_fn)
    if keep_ratio:
        return TrainingPlan(batch, ratio=Constant(lr / batch_size))
    return TrainingPlan(batch, lr=Constant(lr))


def step_values(sizes: list, ratios: list) -> dict:
    """What the steps ``sizes``/``ratios`` of an epoch ran at: ``batch_size`` S, ``lr``
    η = (η/S)·S and ``ratio`` η/S of the first step, and, when they change within the epoch,
    ``within_epoch``: each one's ``[lowest, highest]``. A last step smaller than the one before
    (the epoch's remainder, whose η is η/S times its own size) is not counted.

    >>> step_values([4, 4, 2], [0.01, 0.01, 0.01])
    {'batch_size': 4, 'lr': 0.04, 'ratio': 0.01}
    >>> step_values([4, 8, 8], [0.01, 0.01, 0.005])["within_epoch"]
    {'batch_size': [4, 8], 'lr': [0.04, 0.08], 'ratio': [0.005, 0.01]}
    """
    if len(sizes) > 1 and sizes[-1] < sizes[-2]:
        sizes, ratios = sizes[:-1], ratios[:-1]
    lrs = [r * s for r, s in zip(ratios, sizes)]
    out = {"batch_size": int(sizes[0]), "lr": lrs[0], "ratio": float(ratios[0])}
    ranges = {
        key: [min(values), max(values)]
        for key, values in (("batch_size", [int(s) for s in sizes]), ("lr", lrs), ("ratio", ratios))
    }
    if any(low != high for low, high in ranges.values()):
        out["within_epoch"] = ranges
    return out


class EpochPlan(NamedTuple):
    """One epoch: the size of each batch and, with an η/S schedule, each step's η/S."""

    sizes: list
    ratios: list | None


class EpochPlans:
    """The batch sizes and η/S of every epoch of a run, computed when first needed.

    ``plans[e]`` is the :class:`EpochPlan` of epoch ``e``; with constant schedules every epoch
    is the same and is computed once, so a long run starts at once. A batch size decided
    during training (``--bs-schedule adaptive``) goes in through :meth:`decide`, which keeps
    the computed epochs consistent with it.
    """

    def __init__(self, plan, num_examples: int, epochs: int, min_batch: int = 1):
        self.plan, self.num_examples, self.epochs = plan, num_examples, epochs
        self.min_batch = min_batch
        self.constant = plan.is_constant()
        self._epoch = functools.lru_cache(maxsize=64)(self._compute)

    def decide(self, epoch: int, batch_size: int) -> None:
        """From 0-based ``epoch`` on, the adaptive schedule's batch size is ``batch_size``."""
        self.plan.adaptive.decided[epoch] = batch_size
        self._epoch.cache_clear()

    def _compute(self, epoch: int) -> EpochPlan:
        return EpochPlan(*self.plan.epoch(self.num_examples, epoch, min_batch=self.min_batch))

    def __getitem__(self, epoch: int) -> EpochPlan:
        return self._epoch(0 if self.constant else epoch)

    def __len__(self) -> int:
        return self.epochs

    def each(self) -> list[EpochPlan]:
        """Every epoch's plan (one, when they are all the same)."""
        return [self[0]] if self.constant else [self[e] for e in range(self.epochs)]

    def first_ratio(self) -> float:
        """η/S of the run's first step."""
        return self[0].ratios[0]

    def steps_before(self, epoch: int) -> int:
        if self.constant:
            return epoch * len(self[0].sizes)
        return sum(len(self[e].sizes) for e in range(epoch))

    def smallest(self) -> int:
        return min(min(p.sizes) for p in self.each())

    def most_steps(self) -> int:
        return max(len(p.sizes) for p in self.each())
