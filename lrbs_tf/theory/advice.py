"""Batch-size advice from a probed run: η for each rescaling rule, and whether a step is stable.

Given η0, S0, N and the run's measured step sharpness λ_step (the curvature of the mini-batch
objective SGD steps on; see :class:`lrbs_tf.probes.prober.Prober`) and B_simple, for a target
batch size S:

* η by rule (linear keeps η/S, so the SDE; sqrt; none) and the resulting η/S;
* the stability verdict of :func:`verdict`: η·λ_step against :data:`UNSTABLE_AT` = 3.7, the
  edge measured on the Fashion-MNIST MLP by ``experiments/stability_check.py`` (gradient
  descent on a quadratic diverges along the top direction beyond 2, Wu, Ma & E 2018 for SGD;
  networks ride over it for a while, see :data:`UNSTABLE_AT`);
* the finite-population factor (N − S)/(N − 1): the noise the SDE assumes shrinks as S → N;
* S against B_simple (McCandlish et al. 2018): below it, noise dominates each step and linear
  scaling keeps the dynamics at fewer steps; far above it, extra batch buys little;
* steps per epoch before and after;
* the recommendation (:func:`recommend`): the first stable rule of linear, sqrt and none.

The step sharpness is measured at the run's own S; at another S it changes (BatchNorm's batch
statistics change with S), so the verdict at a new S is a first-order guide: probe again at the
new S (``tools/probe.py RUN --step-batch-size S``) before relying on it.
"""

from __future__ import annotations

import math

from lrbs_tf.core.ratio import Ratio, rescale_lr
from lrbs_tf.theory.sde import finite_population_factor

RULES = ("linear", "sqrt", "none")
# η·λ_step at and above which a step is called unstable (loss spikes, oscillation or
# divergence). The linear-stability limit of gradient descent on a quadratic is 2, but
# networks self-stabilise above it: the loss rises, the sharpness falls and training goes on
# (the "catapult" of Lewkowycz et al. 2020, who find the largest stable η·λ near 4 for wide
# networks). Measured with experiments/stability_check.py on the Fashion-MNIST MLP (10000
# examples, θ0 after one epoch at 0.05/100, 2 epochs per candidate): stable up to
# η·λ_step = 3.66, loss spikes (above 1.5× the starting loss) from 3.73 on, divergence far
# beyond; between 2 and this value a step is "at the edge": expect a transient loss bump.
UNSTABLE_AT = 3.7
EDGE_AT = 2.0
FAR_BELOW_N = 0.1  # S/N up to which the finite-population factor is above 0.9


def verdict(
    lr: float, batch_size: int, num_train: int, step_sharpness: float, b_simple: float | None = None
) -> dict:
    """Is SGD with step η and batch S stable where λ_step was measured, and is S in the
    regime where η/S sets the dynamics? Returns the verdict with the numbers behind it."""
    product = lr * step_sharpness
    stable = product < UNSTABLE_AT
    out = {
        "verdict": "stable" if stable else "unstable",
        "lr_times_step_sharpness": product,
        "top_direction_variance_vs_sde": 2 / (2 - product) if product < 2 else math.inf,
        "s_over_n": batch_size / num_train,
        "finite_population_factor": finite_population_factor(batch_size, num_train),
        "s_over_b_simple": (
            batch_size / b_simple if b_simple and b_simple > 0 and math.isfinite(b_simple) else None
        ),
    }
    edge = stable and product >= EDGE_AT
    out["edge_of_stability"] = edge
    out["reason"] = f"η·λ_step = {product:.3g} {'<' if stable else '≥'} {UNSTABLE_AT:g}"
    if edge:
        out["reason"] += " (above the quadratic limit 2: expect a loss bump while it falls)"
    if batch_size > FAR_BELOW_N * num_train:
        out["reason"] += (
            f"; S/N = {out['s_over_n']:.2g}: the gradient noise shrinks, η/S no "
            "longer sets the dynamics"
        )
    return out


def recommend(rules: dict, checks: dict, target_batch: int) -> dict:
    """The rule to use at ``target_batch``: the first stable one of linear (keeps η/S, so the
    SDE and the minima it leads to), sqrt (the largest η/S among the others) and none; no rule
    when every η is unstable there."""
    for name in RULES:
        rule = rules[name]
        if rule["verdict"] == "stable":
            why = (
                "keeps η/S"
                if name == "linear"
                else f"linear is unstable; η/S ×{rule['ratio_change']:.3g}: expect sharper minima"
            )
            if not checks["batch_well_below_n"]:
                why += "; S is not well below N: η/S no longer sets the dynamics"
            return {"rule": name, "lr": rule["lr"], "ratio": rule["ratio"], "why": why}
    return {
        "rule": None,
        "lr": None,
        "ratio": None,
        "why": f"every rule's η is unstable at S = {target_batch}: stay at a smaller S",
    }


def advise(
    lr: float,
    batch_size: int,
    num_train: int,
    step_sharpness: float,
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
        rules[rule] = dict(
            lr=new.lr,
            ratio=new.value,
            ratio_change=new.value / base.value,
            **verdict(new.lr, target_batch, num_train, step_sharpness, b_simple),
        )
    linear = rules["linear"]
    checks = {
        "linear_stable": linear["verdict"] == "stable",
        "finite_population_factor": finite_population_factor(target_batch, num_train),
        "batch_well_below_n": target_batch <= FAR_BELOW_N * num_train,
        "batch_over_b_simple": target_batch / b_simple if b_simple > 0 else math.inf,
        "noise_dominated": target_batch < b_simple,
    }
    return {
        "recommendation": recommend(rules, checks, target_batch),
        "base": {
            "lr": lr,
            "batch_size": batch_size,
            "ratio": base.value,
            "num_train": num_train,
            "step_sharpness": step_sharpness,
            "b_simple": b_simple,
            "lr_times_step_sharpness": lr * step_sharpness,
        },
        "target_batch": target_batch,
        "rules": rules,
        "checks": checks,
        "linear_rule_expected_to_hold": checks["linear_stable"] and checks["batch_well_below_n"],
        "steps_per_epoch": {
            "before": math.ceil(num_train / batch_size),
            "after": math.ceil(num_train / target_batch),
        },
    }


def undecided(advice: dict, probe: dict) -> list[str]:
    """What the advice cannot decide because an input's error is too large: a verdict whose
    η·λ_step interval (± t·SE of the step sharpness, t ≈ 2.4 for 8 groups) straddles 3.7 or 2,
    and S against B_simple when B_simple is only a lower bound below S or its error is at
    least its value. Each item is one sentence."""
    out = []
    se = probe.get("step_sharpness_stderr")
    if se is not None and math.isfinite(se):
        spread = 2.4 * se
        for rule, found in advice["rules"].items():
            low = found["lr"] * (advice["base"]["step_sharpness"] - spread)
            high = found["lr"] * (advice["base"]["step_sharpness"] + spread)
            for line in (UNSTABLE_AT, EDGE_AT):
                if low < line <= high:
                    out.append(
                        f"{rule}: η·λ_step = {found['lr_times_step_sharpness']:.3g} lies within "
                        f"the step sharpness's error of {line:g} ({low:.3g} to {high:.3g})"
                    )
                    break
    target, b = advice["target_batch"], advice["base"]["b_simple"]
    if probe.get("b_simple_kind") == "lower bound" and target >= b:
        out.append(
            f"S = {target} against B_simple: only B_simple ≥ {b:.4g} is known (‖g‖² is not "
            "significantly above 0 on the probe's examples), so whether S is beyond the noise "
            "scale is undecided"
        )
    elif (probe.get("b_simple_stderr") or 0) >= b > 0:
        out.append(
            f"S = {target} against B_simple = {b:.4g} ± {probe['b_simple_stderr']:.2g}: the "
            "error is at least the value, so S/B_simple is undecided"
        )
    return out
