"""The settings of a scaling test and the plan they give: which branches, at which η, S and
optimizer hyperparameters, for how many examples, measured where. Pure Python.

From θ0 every branch trains the same number of examples E on the same data order (see
:mod:`lrbs_tf.scaling.stream`). A branch at factor k has S = k·S0 and η by its rule:

* ``linear``: η = k·η0 — η/S kept, so the SDE (Jastrzębski et al. 2018; Goyal et al. 2017);
* ``sqrt``: η = √k·η0 (Hoffer et al. 2017); ``none``: η = η0;
* ``sde`` (Adam, RMSprop): the square-root scaling rule of Malladi, Lyu, Panigrahi & Arora
  2022 ("On the SDEs and Scaling Rules for Adaptive Gradient Algorithms", arXiv 2205.10287):
  η = √k·η0, 1 − β' = k·(1 − β) for each moment decay β, ε' = ε/√k. It needs k·(1 − β) < 1:
  a factor beyond that has no such β and is not run (reported ``n/a``).

SGD's momentum is kept as it is under every rule. E is rounded down to a whole number of
*blocks* of lcm(factors)·S0 examples, so that every branch takes whole batches and is measured
at the same examples: ``points`` measurement points spaced in blocks. The base (k = 1) runs
under ``orders`` data orders (seeds ``seed``, ``seed + 1``, …) for the noise floor; the rule
branches and SVAG use the first.
"""

from __future__ import annotations

import dataclasses
import math

from lrbs_tf.core.ratio import Ratio, RatioError, parse_ratio
from lrbs_tf.scaling.settings import FAR_BELOW_N, RULES, ScaleSettings
from lrbs_tf.settings import ConfigError, check_fields


@dataclasses.dataclass(frozen=True)
class BranchSpec:
    """One branch: its name, kind (``base``, ``rule`` or ``svag``), rule, factor k, SVAG ℓ,
    data order (a seed), η, S (per batch), optimizer hyperparameters and steps."""

    name: str
    kind: str
    rule: str | None
    k: int
    ell: int
    order: int
    lr: float
    batch: int
    steps: int
    optimizer: dict

    @property
    def ratio(self) -> float:
        return self.lr / self.batch


@dataclasses.dataclass(frozen=True)
class Plan:
    """The resolved test: η0, S0, N, the factors and rules, E, the block, the measurement points
    (examples), the data orders, the SVAG ℓ, the optimizer, and every branch in running order
    (``skipped``: rule branches with no valid hyperparameters, as ``(rule, k, why)``)."""

    lr0: float
    batch0: int
    num_train: int
    factors: tuple
    rules: tuple
    examples: int
    block: int
    points: tuple
    orders: tuple
    ells: tuple
    optimizer: dict
    branches: tuple
    skipped: tuple = ()

    def steps_at(self, batch: int, ell: int = 1) -> list[int]:
        """The optimizer steps at each measurement point for batches of ``batch`` (SVAG: ℓ×)."""
        return [ell * p // batch for p in self.points]

    def branch(self, name: str) -> BranchSpec:
        return next(b for b in self.branches if b.name == name)

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["branches"] = [dataclasses.asdict(b) | {"ratio": b.ratio} for b in self.branches]
        return out


def ints(text: str, what: str, low: int) -> list[int]:
    try:
        values = [int(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"{what} must be comma-separated whole numbers, got {text!r}") from None
    if not values or min(values) < low:
        raise ConfigError(f"{what} must be whole numbers of at least {low}, got {text!r}")
    return values


def rescaled(rule: str, k: int, lr0: float, optimizer: dict) -> tuple[dict | None, str]:
    """``(hyperparameters, why)`` of ``rule`` at factor k: ``{"lr": …}`` plus the rescaled
    ``beta_1``, ``beta_2``, ``epsilon`` for ``sde``; None (and why) when the rule has none."""
    if rule == "linear":
        return {"lr": k * lr0}, ""
    if rule == "sqrt":
        return {"lr": math.sqrt(k) * lr0}, ""
    if rule == "none":
        return {"lr": lr0}, ""
    out = {"lr": math.sqrt(k) * lr0, "epsilon": optimizer["epsilon"] / math.sqrt(k)}
    for beta in ("beta_1", "beta_2") if optimizer["name"] == "adam" else ("beta_1",):
        one_minus = k * (1 - optimizer[beta])
        if one_minus >= 1:
            name = {"beta_1": "β1", "beta_2": "β2"}[beta]
            return None, f"k·(1 − {name}) = {one_minus:.3g} ≥ 1: no such decay"
        out[beta] = 1 - one_minus
    return out, ""


def resolve(settings: ScaleSettings, num_train: int, base: str, momentum: float = 0.0) -> Plan:
    """The plan of ``settings`` on N = ``num_train`` examples from the base η0/S0 ``base``
    (when ``settings.base`` is None); ConfigError (one line) for anything that cannot run."""
    check_fields(settings)
    try:
        base_ratio = parse_ratio(settings.base or base)
    except RatioError as e:
        raise ConfigError(f"--base: {e}") from None
    lr0, batch0 = base_ratio.lr, base_ratio.batch_size
    optimizer = _optimizer(settings, momentum)
    factors = _factors(settings, batch0, num_train)
    rules = _rules(settings, optimizer["name"])
    block = math.lcm(*factors) * batch0
    if block > num_train:
        raise ConfigError(
            f"the batches of every factor must tile the data: lcm({','.join(map(str, factors))})"
            f" × S0 = {block} examples, more than N = {num_train}"
        )
    wanted = settings.examples if settings.examples is not None else num_train
    largest = factors[-1] * batch0
    if wanted < largest:
        raise ConfigError(
            f"--examples {wanted} is smaller than the largest batch S = {largest}: every branch "
            "must take at least one step"
        )
    if wanted < block:
        raise ConfigError(f"--examples {wanted} is smaller than one block of {block} examples")
    examples = wanted // block * block
    blocks = examples // block
    points = tuple(
        sorted(
            {
                max(1, round(j * blocks / settings.points)) * block
                for j in range(1, settings.points + 1)
            }
        )
    )
    orders = tuple(settings.seed + i for i in range(settings.orders))
    ells = _ells(settings, optimizer)
    branches, skipped = _branches(lr0, batch0, factors, rules, examples, orders, ells, optimizer)
    return Plan(
        lr0,
        batch0,
        num_train,
        tuple(factors),
        tuple(rules),
        examples,
        block,
        points,
        orders,
        tuple(ells),
        optimizer,
        tuple(branches),
        tuple(skipped),
    )


def _optimizer(settings: ScaleSettings, momentum: float) -> dict:
    name = settings.optimizer
    if name == "sgd":
        m = settings.momentum if settings.momentum is not None else momentum
        return {"name": "sgd", "momentum": float(m)}
    if settings.momentum:
        raise ConfigError(f"--momentum is SGD's; --optimizer {name} has its own decay --beta-1")
    for beta in ("beta_1", "beta_2"):
        if not 0 < getattr(settings, beta) < 1:
            raise ConfigError(f"--{beta.replace('_', '-')} must be in (0, 1)")
    out = {"name": name, "beta_1": settings.beta_1, "epsilon": settings.epsilon}
    if name == "adam":
        out["beta_2"] = settings.beta_2
    return out


def _factors(settings: ScaleSettings, batch0: int, num_train: int) -> list[int]:
    if settings.factors is None:
        top = min(num_train // FAR_BELOW_N, settings.max_batch or num_train)
        factors = [1]
        while 2 * factors[-1] * batch0 <= top:
            factors.append(2 * factors[-1])
        if len(factors) == 1:
            raise ConfigError(
                f"no factor k ≥ 2 keeps S = k·{batch0} ≤ {top} (N/{FAR_BELOW_N} and --max-batch): "
                "give --factors, a smaller S0 or more data"
            )
        return factors
    factors = ints(settings.factors, "--factors", low=1)
    if any(b <= a for a, b in zip(factors, factors[1:])):
        raise ConfigError(f"--factors must increase, got {settings.factors}")
    factors = factors if factors[0] == 1 else [1] + factors
    if len(factors) == 1:
        raise ConfigError("--factors needs at least one factor k ≥ 2")
    for k in factors:
        if k * batch0 > num_train:
            raise ConfigError(
                f"factor k = {k} gives S = {k * batch0}, more than the N = {num_train} "
                "training examples"
            )
    return factors


def _rules(settings: ScaleSettings, optimizer: str) -> list[str]:
    default = "linear,sqrt" if optimizer == "sgd" else "sde,sqrt"
    rules = [r.strip() for r in (settings.rules or default).split(",") if r.strip()]
    for rule in rules:
        if rule not in RULES:
            raise ConfigError(f"--rules takes {', '.join(RULES)}, got {rule!r}")
    if len(set(rules)) != len(rules) or not rules:
        raise ConfigError(f"--rules must name each rule once, got {settings.rules!r}")
    if "sde" in rules and optimizer == "sgd":
        raise ConfigError("--rules sde is for --optimizer adam or rmsprop (for SGD it is linear)")
    return rules


def _ells(settings: ScaleSettings, optimizer: dict) -> list[int]:
    plain = optimizer["name"] == "sgd" and not optimizer["momentum"]
    text = settings.svag if settings.svag is not None else "2,4" if plain else "none"
    if text.strip().lower() in ("none", ""):
        return []
    ells = ints(text, "--svag", low=2)
    if not plain:
        raise ConfigError(
            "--svag is defined for plain SGD (Li, Malladi & Arora 2021): drop it, or pass "
            "--svag none, with momentum or an adaptive optimizer"
        )
    return sorted(set(ells))


def _branches(lr0, batch0, factors, rules, examples, orders, ells, optimizer):
    def spec(name, kind, rule, k, ell, order, hyper, batch, steps):
        opt = dict(optimizer, **{n: v for n, v in hyper.items() if n != "lr"})
        return BranchSpec(name, kind, rule, k, ell, order, hyper["lr"], batch, steps, opt)

    base = [
        spec(f"base-order{i}", "base", None, 1, 1, seed, {"lr": lr0}, batch0, examples // batch0)
        for i, seed in enumerate(orders)
    ]
    branches, skipped = [], []
    for rule in rules:
        for k in factors[1:]:
            hyper, why = rescaled(rule, k, lr0, optimizer)
            if hyper is None:
                skipped.append((rule, k, why))
                continue
            Ratio(hyper["lr"], k * batch0)  # η must fit float32
            steps = examples // (k * batch0)
            branches.append(
                spec(f"{rule}-k{k}", "rule", rule, k, 1, orders[0], hyper, k * batch0, steps)
            )
    svag = [
        spec(
            f"svag-l{ell}",
            "svag",
            None,
            1,
            ell,
            orders[0],
            {"lr": lr0 / ell},
            batch0,
            ell * examples // batch0,
        )
        for ell in ells
    ]
    return base + branches + svag, skipped
