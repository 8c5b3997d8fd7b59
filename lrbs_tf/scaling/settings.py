"""The settings of a scaling test, each declared once with its flag of ``lrbs-scale`` (the
rules, factors, examples, floor, SVAG, optimizer and probes; :mod:`lrbs_tf.scaling.plan` turns
them into branches). Pure Python."""

from __future__ import annotations

import dataclasses

from lrbs_tf.settings import between, optional, positive, setting

GROUP = "scaling test"
RULES = ("linear", "sqrt", "none", "sde")
OPTIMIZERS = ("sgd", "adam", "rmsprop")
FAR_BELOW_N = 10  # the default factors stop at S ≤ N / FAR_BELOW_N


def _level(value):
    if not isinstance(value, float) or not 0.5 <= value < 1:
        return f"must be in [0.5, 1), got {value!r}"
    return None


@dataclasses.dataclass
class ScaleSettings:
    """What a scaling test measures (every field has a flag of ``lrbs-scale``)."""

    base: str | None = setting(
        None,
        "η0/S0 of the base branch (default: the starting run's own η/S; 0.1/50 from --from "
        "init or a .keras file)",
        kind=str,
        group=GROUP,
        metavar="LR/S",
    )
    factors: str | None = setting(
        None,
        "increasing factors k of the batch, S = k·S0 (default 1,2,4,… up to S ≤ N/10 and "
        "--max-batch); 1 is added if missing",
        kind=str,
        group=GROUP,
    )
    max_batch: int | None = setting(
        None,
        "largest S of the default factors",
        kind=int,
        check=optional(between(1, 10**8)),
        group=GROUP,
    )
    rules: str | None = setting(
        None,
        f"rescaling rules, comma-separated from {', '.join(RULES)} (default: linear,sqrt for "
        "SGD; sde,sqrt for Adam and RMSprop)",
        kind=str,
        group=GROUP,
    )
    examples: int | None = setting(
        None,
        "examples E each branch trains (default: one epoch, N), rounded down to whole blocks",
        kind=int,
        check=optional(between(1, 10**10)),
        group=GROUP,
    )
    orders: int = setting(
        3,
        "data orders of the base (k = 1) for the noise floor",
        check=between(3, 100),
        group=GROUP,
    )
    points: int = setting(8, "measurement points per branch", check=between(1, 100), group=GROUP)
    svag: str | None = setting(
        None,
        "SVAG amplifications ℓ ≥ 2 at the base batch (default 2,4 for plain SGD, none for "
        "momentum or an adaptive optimizer; 'none': no SVAG test)",
        kind=str,
        group=GROUP,
    )
    level: float = setting(
        0.95, "coverage of the noise floor (a prediction interval)", check=_level, group=GROUP
    )
    eval_examples: int = setting(
        5000,
        "training examples the loss at the weights is measured on (a fixed subset)",
        check=between(1, 10**7),
        group=GROUP,
    )
    bn_examples: int = setting(
        2000,
        "training examples BatchNorm's statistics are recomputed on before each measurement",
        check=between(1, 10**7),
        group=GROUP,
    )
    optimizer: str = setting(
        "sgd", "the optimizer of every branch", choices=OPTIMIZERS, group=GROUP
    )
    momentum: float | None = setting(
        None,
        "SGD momentum (default: the starting run's, else 0)",
        kind=float,
        check=optional(lambda v: None if 0 <= v < 1 else f"must be in [0, 1), got {v!r}"),
        group=GROUP,
    )
    beta_1: float = setting(0.9, "Adam's β1 (RMSprop: its ρ)", check=positive, group=GROUP)
    beta_2: float = setting(0.999, "Adam's β2", check=positive, group=GROUP)
    epsilon: float = setting(1e-7, "Adam's and RMSprop's ε", check=positive, group=GROUP)
    probe: bool = setting(True, "no probes at θ0 (no predictions)", flag="--no-probe", group=GROUP)
    probe_examples: int = setting(
        1000, "examples of the probes at θ0", check=between(2, 10**7), group=GROUP
    )
    noise_examples: int = setting(
        500, "examples of B_simple at θ0", check=between(2, 10**7), group=GROUP
    )
    seed: int = setting(0, "seed of the first data order", check=between(0, 2**31 - 200), cli=False)
