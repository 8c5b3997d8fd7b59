"""Batch-size advice from a finished run: η for each rescaling rule and whether theory holds.

Given η0, S0, N and the run's measured λ_max and B_simple, for a target batch size S:

* η by rule (linear keeps η/S, so the SDE; sqrt; none) and the resulting η/S;
* η·λ_max: SGD on the quadratic model is stable only below 2, and the SDE describes it only
  well below (the exact discrete variance along the top direction is 2/(2 − ηλ) times the
  SDE's; see :mod:`lrbs_tf.theory`);
* the finite-population factor (N − S)/(N − 1): the noise the SDE assumes shrinks as S → N;
* S against B_simple (McCandlish et al. 2018): below it, noise dominates each step and linear
  scaling keeps the dynamics at fewer steps; far above it, extra batch buys little;
* steps per epoch before and after.
"""

from __future__ import annotations

import math

from lrbs_tf.core.ratio import Ratio, rescale_lr
from lrbs_tf.theory.sde import finite_population_factor

RULES = ("linear", "sqrt", "none")


def _stability(lr_lambda: float) -> str:
    if lr_lambda >= 2:
        return "unstable (η·λ_max ≥ 2: SGD diverges along the top direction)"
    if lr_lambda > 1:
        return "caution (η·λ_max > 1: discretisation error large, SDE picture inexact)"
    if lr_lambda > 0.5:
        return "fair (η·λ_max > 0.5: noticeable discrete-time correction)"
    return "ok (η·λ_max ≤ 0.5)"


def advise(
    lr: float,
    batch_size: int,
    num_train: int,
    lambda_max: float,
    b_simple: float,
    target_batch: int,
) -> dict:
    """The numbers behind ``tools/advise.py`` (see the module docstring)."""
    base = Ratio(lr, batch_size)
    if not 1 <= target_batch <= num_train:
        raise ValueError(f"target batch {target_batch} must be between 1 and N = {num_train}")
    rules = {}
    for rule in RULES:
        new = rescale_lr(base, target_batch, rule)
        lr_lambda = new.lr * lambda_max
        rules[rule] = {
            "lr": new.lr,
            "ratio": new.value,
            "ratio_change": new.value / base.value,
            "lr_lambda_max": lr_lambda,
            "top_direction_variance_vs_sde": (2 / (2 - lr_lambda)) if lr_lambda < 2 else math.inf,
            "stability": _stability(lr_lambda),
        }
    factor = finite_population_factor(target_batch, num_train)
    linear = rules["linear"]
    checks = {
        "linear_stable": linear["lr_lambda_max"] < 2,
        "linear_in_sde_regime": linear["lr_lambda_max"] <= 1,
        "finite_population_factor": factor,
        "batch_well_below_n": target_batch <= 0.1 * num_train,
        "batch_over_b_simple": target_batch / b_simple if b_simple > 0 else math.inf,
        "noise_dominated": target_batch < b_simple,
    }
    linear_holds = checks["linear_in_sde_regime"] and checks["batch_well_below_n"]
    return {
        "base": {
            "lr": lr,
            "batch_size": batch_size,
            "ratio": base.value,
            "num_train": num_train,
            "lambda_max": lambda_max,
            "b_simple": b_simple,
            "lr_lambda_max": lr * lambda_max,
        },
        "target_batch": target_batch,
        "rules": rules,
        "checks": checks,
        "linear_rule_expected_to_hold": linear_holds,
        "steps_per_epoch": {
            "before": math.ceil(num_train / batch_size),
            "after": math.ceil(num_train / target_batch),
        },
    }
