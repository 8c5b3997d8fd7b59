"""The learning-rate-to-batch-size ratio η/S: parsing, resolving flags, rescaling rules.

Pure Python (no TensorFlow import) so command-line tools can validate flags before loading
heavy machinery.

SGD with step η and batch S discretises dθ = −g(θ)dt + sqrt(η/S)·R(θ)dW (Jastrzębski et al.,
2018, Eq. 5): the path properties depend on η/S only, while η alone sets the step of the
Euler–Maruyama discretisation.
"""

from __future__ import annotations

import dataclasses
import math

__all__ = ["Ratio", "RatioError", "parse_ratio", "resolve_ratio", "rescale_lr", "RESCALE_RULES"]


# The optimizer holds η/S and η in float32: outside this range they overflow to inf or flush
# to 0 (TensorFlow raised a ValueError from optimizer.build for η = 1e39).
FLOAT32_MAX = 3.4028234663852886e38
FLOAT32_TINY = 1.1754943508222875e-38  # the smallest normal float32


class RatioError(ValueError):
    """A ratio, learning rate or batch size that cannot be used; the message is one line."""


def _positive_float(text: str, what: str) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise RatioError(f"{what} must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise RatioError(f"{what} must be finite, got {text!r}")
    if value <= 0:
        raise RatioError(f"{what} must be positive, got {text!r}")
    return value


def _batch_size(text, what: str = "batch size") -> int:
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    else:
        raw = str(text).strip()
        try:
            value = int(raw)
        except ValueError:
            number = _positive_float(raw, what)
            if number != int(number):
                raise RatioError(f"{what} must be a whole number, got {raw!r}") from None
            value = int(number)
    if value <= 0:
        raise RatioError(f"{what} must be a positive whole number, got {text!r}")
    return value


@dataclasses.dataclass(frozen=True)
class Ratio:
    """A learning rate η and a (global) batch size S; ``value`` is η/S."""

    lr: float
    batch_size: int

    def __post_init__(self):
        _positive_float(self.lr, "learning rate")
        _batch_size(self.batch_size)
        if self.lr > FLOAT32_MAX:
            raise RatioError(
                f"learning rate {self.lr:g} overflows float32, in which the optimizer holds it "
                f"(at most {FLOAT32_MAX:.3g})"
            )
        if self.value < FLOAT32_TINY:
            raise RatioError(
                f"η/S = {self.lr:g}/{self.batch_size} = {self.value:g} is below float32's "
                f"smallest normal number ({FLOAT32_TINY:.3g}): it would flush to 0"
            )

    @property
    def value(self) -> float:
        return self.lr / self.batch_size

    def __str__(self) -> str:
        return f"{self.lr:g}/{self.batch_size}"


def parse_ratio(text: str, batch_size=None) -> Ratio:
    """Parse ``"0.005/640"`` (η/S), or a bare ratio ``"7.8125e-6"`` together with ``batch_size``.

    >>> parse_ratio("0.005/640").value
    7.8125e-06
    >>> parse_ratio("7.8125e-6", batch_size=640).lr
    0.005
    """
    text = str(text).strip()
    parts = text.split("/")
    if len(parts) > 2:
        raise RatioError(f"ratio must be LR/BATCH or a single number, got {text!r} (too many '/')")
    if len(parts) == 2:
        if batch_size is not None:
            raise RatioError(f"--ratio {text} already gives the batch size; drop --batch-size")
        lr = _positive_float(parts[0].strip(), "learning rate in --ratio")
        return Ratio(lr, _batch_size(parts[1].strip(), "batch size in --ratio"))
    value = _positive_float(text, "ratio")
    if batch_size is None:
        raise RatioError(f"a bare ratio {text!r} needs --batch-size (or write it as LR/BATCH)")
    batch = _batch_size(batch_size)
    return Ratio(value * batch, batch)


def resolve_ratio(ratio=None, lr=None, batch_size=None, default: str | None = None) -> Ratio:
    """Combine the ``--ratio``, ``--lr`` and ``--batch-size`` flags into one :class:`Ratio`.

    Accepted: ``ratio="η/S"``; ``ratio="η/S value", batch_size``; ``lr, batch_size``.
    Anything else (both ``ratio`` and ``lr``, ``lr`` alone, ...) raises :class:`RatioError`.
    """
    if ratio is not None and lr is not None:
        raise RatioError("give either --ratio or --lr with --batch-size, not both")
    if ratio is not None:
        return parse_ratio(ratio, batch_size)
    if lr is not None:
        if batch_size is None:
            raise RatioError("--lr needs --batch-size")
        return Ratio(_positive_float(lr, "learning rate"), _batch_size(batch_size))
    if batch_size is not None:
        raise RatioError("--batch-size needs --lr or a bare --ratio")
    if default is None:
        raise RatioError("give --ratio LR/BATCH (for example --ratio 0.005/640)")
    return parse_ratio(default)


RESCALE_RULES = ("linear", "sqrt", "none")


def rescale_exponent(rule: str) -> float:
    """Exponent p of η ∝ S^p for a rule name: linear 1, sqrt 0.5, none 0, or a number p."""
    named = {"linear": 1.0, "sqrt": 0.5, "none": 0.0}
    if rule in named:
        return named[rule]
    try:
        p = float(rule)
    except (TypeError, ValueError):
        raise RatioError(
            f"rescale rule must be linear, sqrt, none or a power p, got {rule!r}"
        ) from None
    if not math.isfinite(p):
        raise RatioError(f"rescale power must be finite, got {rule!r}")
    return p


def rescale_lr(base: Ratio, batch_size: int, rule: str = "linear") -> Ratio:
    """Move a recipe η0/S0 to batch size S: η = η0·(S/S0)^p.

    ``linear`` (p=1) keeps η/S and so the SDE (Goyal et al. 2017; the paper's Fig. 2); ``sqrt``
    (p=1/2) keeps η/√S (Hoffer et al. 2017); ``none`` keeps η.
    """
    batch = _batch_size(batch_size)
    p = rescale_exponent(rule)
    try:
        lr = base.lr * (batch / base.batch_size) ** p
    except OverflowError:
        lr = math.inf
    if not 0 < lr < math.inf:
        raise RatioError(
            f"rescaling {base} to batch {batch} with power {p:g} gives η = {lr:g}: out of range"
        )
    return Ratio(lr, batch)
