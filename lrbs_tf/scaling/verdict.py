"""The noise floor, the verdict on each branch, the measured critical factor k*, and what the
probes at θ0 predicted. NumPy and SciPy only.

**The floor.** The base (k = 1) trains under n ≥ 3 data orders; at each measurement point its
losses have a mean m and a standard deviation s (n − 1 in the denominator). The floor is the
``level`` (95 %) *prediction interval* of one more run of the base: m ± t·s·√(1 + 1/n), t the
Student-t quantile with n − 1 degrees of freedom — the range in which the loss of a run that
differs from the base only by chance falls with that probability.

**Keeping η/S equivalence.** A branch keeps it when its loss after the E examples is inside the
floor: one test per branch, so a branch that differs from the base only by chance is called
out with probability 1 − ``level``. (Testing each of the 8 points would call out such a
branch far more often; where its curve leaves the floor on the way is reported beside the
verdict.) A branch outside leaves it *higher* — ``diverged`` (a non-finite loss), ``unstable``
(at some point its loss rose above 1.5 × the loss at θ0, or it ended no lower than that: the
rule of ``lrbs-stability``) or ``too little progress`` — or *lower* (``less noise than the
base``, which is not equivalence either).

**k*.** Per rule, the largest k such that it and every smaller factor keep equivalence.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

from lrbs_tf.theory.advice import EDGE_AT, UNSTABLE_AT, verdict

SPIKE = 1.5  # a loss above 1.5 × the loss at θ0 is a spike, as in lrbs-stability


def noise_floor(losses, level: float = 0.95) -> dict:
    """The floor at each point from the base's ``losses`` (orders × points)."""
    losses = np.asarray(losses, float)
    n = losses.shape[0]
    if n < 3:
        raise ValueError(f"the floor needs at least 3 data orders, got {n}")
    mean, sd = losses.mean(axis=0), losses.std(axis=0, ddof=1)
    t = float(stats.t.ppf((1 + level) / 2, n - 1))
    half = t * sd * math.sqrt(1 + 1 / n)
    return {
        "statistic": f"{100 * level:g} % prediction interval of one more base run: "
        f"mean ± t({n - 1}) · sd · √(1 + 1/{n}) over {n} data orders",
        "orders": n,
        "t": t,
        "mean": mean.tolist(),
        "sd": sd.tolist(),
        "half_width": half.tolist(),
        "low": (mean - half).tolist(),
        "high": (mean + half).tolist(),
    }


def judge(losses, floor: dict, start_loss: float) -> dict:
    """Does a branch (its ``losses`` at the points, shorter if it stopped) keep η/S
    equivalence — is its loss after E inside the floor — and if not, which way did it leave?
    ``left_at``: the first point where its curve is outside the floor (also for a branch that
    keeps equivalence after E: a pointwise excursion, each point tested at the floor's level)."""
    points = len(floor["mean"])
    losses = list(losses) + [math.inf] * (points - len(losses))
    outside = [
        not (math.isfinite(v) and lo <= v <= hi)
        for v, lo, hi in zip(losses, floor["low"], floor["high"])
    ]
    out = {
        "keeps": not outside[-1],
        "side": None,
        "outside": outside,
        "left_at": outside.index(True) if any(outside) else None,
        "way": None,
    }
    if out["keeps"]:
        return out
    higher = not math.isfinite(losses[-1]) or losses[-1] > floor["high"][-1]
    out["side"] = "higher" if higher else "lower"
    if not all(math.isfinite(v) for v in losses):
        out["way"] = "diverged"
    elif higher:
        out["way"] = "unstable" if spiked(losses, start_loss) else "too little progress"
    else:
        out["way"] = "less noise than the base"
    return out


def spiked(losses, start_loss: float) -> bool:
    """The stability check's rule (``experiments/stability_check.py``): the loss rose above
    :data:`SPIKE` × the loss at θ0 at some point, or ended no lower than it."""
    return max(losses) > SPIKE * start_loss or losses[-1] >= start_loss


def critical_factor(judged: list[tuple[int, dict]]) -> dict:
    """k* of one rule from ``(k, judge(...))`` in increasing k (k = 1, the base, keeps);
    ``back_inside``: larger factors inside the floor again after the first that left it."""
    k_star, broken, back = 1, None, []
    for k, j in judged:
        if broken is None and j["keeps"]:
            k_star = k
        elif broken is None:
            broken = k
        elif j["keeps"]:
            back.append(k)
    return {"k_star": k_star, "first_break": broken, "back_inside": back}


def _largest_below(products: list[tuple[int, float]], limit: float) -> int:
    k_star = 1
    for k, product in products:
        if not product < limit:
            break
        k_star = k
    return k_star


def edge_batch(products: list[tuple[int, float]], batch0: int, limit: float) -> float | None:
    """The S at which η·λ_step reaches ``limit``, interpolated log-log between the factors
    tried (None when it is not crossed among them)."""
    for (k1, p1), (k2, p2) in zip(products, products[1:]):
        if p1 < limit <= p2 and p1 > 0:
            frac = math.log(limit / p1) / math.log(p2 / p1)
            return batch0 * math.exp(math.log(k1) + frac * (math.log(k2) - math.log(k1)))
    return None


def predictions(plan, lrs: dict, sharpness: dict, probe: dict) -> dict:
    """What θ0's probes predict per rule: η·λ_step at each S tried (``sharpness``: S → step
    sharpness; ``lrs``: rule → [(k, η)]), the advisor's verdict there, and the factors where
    the step reaches the advisor's calibrated edge (3.7) and the quadratic limit (2); and
    B_simple with its standard error and the largest factor with S ≤ B_simple."""
    b_simple, n = probe.get("b_simple"), plan.num_train
    rules = {}
    for rule, pairs in lrs.items():
        rows = [
            dict(
                k=k,
                lr=lr,
                batch=k * plan.batch0,
                step_sharpness=sharpness[k * plan.batch0],
                **verdict(lr, k * plan.batch0, n, sharpness[k * plan.batch0], b_simple),
            )
            for k, lr in pairs
        ]
        products = [(r["k"], r["lr_times_step_sharpness"]) for r in rows]
        rules[rule] = {
            "rows": rows,
            "k_star_stability": _largest_below(products, UNSTABLE_AT),
            "k_star_quadratic": _largest_below(products, EDGE_AT),
            "edge_batch_stability": edge_batch(products, plan.batch0, UNSTABLE_AT),
            "edge_batch_quadratic": edge_batch(products, plan.batch0, EDGE_AT),
        }
    fits = [k for k in plan.factors if b_simple is not None and k * plan.batch0 <= b_simple]
    return {
        "rules": rules,
        "b_simple": b_simple,
        "b_simple_stderr": probe.get("b_simple_stderr"),
        "k_star_b_simple": max(fits) if fits else None,
        "width_sharpness": probe.get("width_sharpness"),
        "unstable_at": UNSTABLE_AT,
        "edge_at": EDGE_AT,
        "definitions": DEFINITIONS,
    }


DEFINITIONS = {
    "measured": "largest k such that it and every smaller k keep the loss after E inside the "
    "base's noise floor (a prediction interval over the data orders): equal training at equal "
    "examples from θ0 (a strict, local critical batch)",
    "stability": f"largest k with η·λ_step < {UNSTABLE_AT:g} at S = k·S0, the advisor's edge "
    "calibrated by stability_check.py (λ_step: the step sharpness at θ0, BatchNorm over batches "
    "of S)",
    "quadratic": f"largest k with η·λ_step < {EDGE_AT:g}, gradient descent's limit on a quadratic",
    "b_simple": "largest k with S ≤ B_simple = tr C/|g|² at θ0, the simple noise scale: "
    "McCandlish et al. 2018's estimate of the critical batch beyond which, with η tuned, larger "
    "batches save fewer and fewer steps (Zhang et al. 2024's critical batch, 20 % more steps "
    "than perfect scaling, is about 0.2·B_noise); beyond it the gradient is signal- rather than "
    "noise-dominated. Another definition than the measured k*: the two can differ either way",
}
