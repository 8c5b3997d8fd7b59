"""Sampling errors of the probe figures over the choice of examples.

A probe measures the Hessian and the gradient noise of the mean loss over n examples drawn
from the N training examples; the question users ask is how far the number would move on
other examples. Every figure gets a standard error from a **delete-one-group jackknife**: the
n probe examples are split into G disjoint, contiguous groups (:func:`~lrbs_tf.probes.hessian.
batch_layout`; G = :attr:`~lrbs_tf.probes.settings.ProbeSettings.groups`, 8 by default), the
figure θ is recomputed without each group, θ_(−g), and

    SE² = (G − 1)/G · Σ_g (θ_(−g) − θ̄)²,   θ̄ = mean_g θ_(−g)

(Efron & Stein 1981; Efron & Tibshirani, *An Introduction to the Bootstrap*, ch. 11). Why a
jackknife over groups: it needs no model of the figure (λ_max and ‖H‖_F are not means over
examples), it costs one extra pass per figure here, because each group's Hessian-vector
product comes out of the same pass as the full one (:meth:`~lrbs_tf.probes.hessian.
HessianOperator.group_matvec`), and its G − 1 degrees of freedom are stated: an interval is
θ ± t_{0.975, G−1}·SE (:func:`interval`), wider than ±1.96·SE for small G.

Per figure:

* **Tr H** (Hutch++) and **‖H‖_F** (Hutchinson): the same random vectors for every θ_(−g), so
  the jackknife sees the examples' variability only; the estimator's own standard error (over
  its random vectors) is added in quadrature (``*_stderr`` is the total; ``*_sampling_stderr``
  and ``*_estimator_stderr`` are the parts).
* **λ_max** (width and step sharpness): θ_(−g) to first order, the Rayleigh quotient
  uᵀH_(−g)u at the full set's top eigenvector u (exact to first order in H_(−g) − H by
  eigenvalue perturbation; one extra pass). λ_max of a subset of the training set is biased
  upward (the largest eigenvalue is convex in H, so E λ_max(H_n) ≥ λ_max(E H_n)); the
  first-order jackknife does not correct that bias: ``tests/test_sampling.py`` measures how
  often the interval covers the full training set's value. The step sharpness's groups are
  runs of its mini-batches (at most one per mini-batch; with one mini-batch there is none).
* **Tr C, ‖g‖², B_simple**: the jackknife over the noise estimator's own groups
  (:func:`lrbs_tf.probes.noise.gradient_noise`).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import scipy.stats

from lrbs_tf.probes import spectral


@dataclasses.dataclass
class Sampled:
    """An estimate with its total standard error, and the parts: over the choice of examples
    (jackknife) and over the estimator's random vectors."""

    value: float
    stderr: float
    sampling_stderr: float
    estimator_stderr: float
    matvecs: int


def jackknife(leave_one_out) -> float:
    """The delete-one jackknife standard error of the values θ_(−g); NaN for fewer than two
    (or non-finite) values."""
    values = np.asarray(leave_one_out, dtype=float)
    k = len(values)
    if k < 2 or not np.all(np.isfinite(values)):
        return math.nan
    return float(math.sqrt((k - 1) / k * np.sum((values - values.mean()) ** 2)))


def t_quantile(groups: int, level: float = 0.95) -> float:
    """The two-sided ``level`` quantile of Student's t with ``groups − 1`` degrees of freedom
    (the jackknife's)."""
    return float(scipy.stats.t.ppf(0.5 + level / 2, max(groups - 1, 1)))


def interval(value: float, stderr: float, groups: int, level: float = 0.95) -> tuple:
    """``(low, high)``: ``value ± t·stderr`` (:func:`t_quantile`)."""
    t = t_quantile(groups, level)
    return value - t * stderr, value + t * stderr


def _without(total: float, parts: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """θ_(−g) of a figure that is a weighted mean of its groups' parts (none with one group)."""
    if len(weights) < 2:
        return np.array([])
    return (total - weights * parts) / (1.0 - weights)


def rayleigh_leave_one_out(op, u: np.ndarray) -> np.ndarray:
    """uᵀH_(−g)u for every group g (unit ``u``): λ_max without group g, to first order."""
    per_group = op.group_matvec(u) @ u
    return _without(float(op.group_weights @ per_group), per_group, op.group_weights)


def hutchpp_trace(op, num: int = 99, seed: int = 0) -> Sampled:
    """Tr H by Hutch++ (as :func:`lrbs_tf.probes.spectral.hutchpp_trace`, the same draws), with
    the jackknife over the operator's groups: the sketch Q is found on the full H; the exact
    part tr(QᵀH_gQ) and the Hutchinson part are then taken per group."""
    third = max(1, num // 3)
    rng = np.random.default_rng(seed)
    S = spectral._rademacher(rng, op.dim, third)
    HS = np.array([op.matvec(s) for s in S])
    Q, _ = np.linalg.qr(HS.T)
    top = sum(op.group_matvec(q) @ q for q in Q.T)  # per group
    G = spectral._rademacher(rng, op.dim, third)
    G -= (G @ Q) @ Q.T
    samples = np.array([op.group_matvec(g) @ g for g in G])  # draws × groups
    w = op.group_weights
    value = float(w @ (top + samples.mean(axis=0)))
    full_samples = samples @ w
    estimator = float(full_samples.std(ddof=1) / math.sqrt(third)) if third > 1 else math.nan
    sampling = jackknife(_without(value, top + samples.mean(axis=0), w))
    return Sampled(value, _total(sampling, estimator), sampling, estimator, 3 * third)


def hutchinson_frobenius(op, num: int = 30, seed: int = 0) -> Sampled:
    """‖H‖_F = √E‖Hz‖² (as :func:`lrbs_tf.probes.spectral.hutchinson_frobenius`), with ‖H_(−g)z‖²
    from the same products for the jackknife."""
    rng = np.random.default_rng(seed)
    w = op.group_weights
    full, without = [], []
    for _ in range(num):
        per_group = op.group_matvec(spectral._rademacher(rng, op.dim))
        hz = w @ per_group
        full.append(float(hz @ hz))
        if len(w) > 1:
            rest = (hz[None, :] - w[:, None] * per_group) / (1.0 - w[:, None])
            without.append(np.sum(rest * rest, axis=1))
    full, without = np.array(full), np.array(without)
    value = math.sqrt(max(float(full.mean()), 0.0))
    sq_se = float(full.std(ddof=1) / math.sqrt(num)) if num > 1 else math.nan
    estimator = sq_se / (2 * value) if value > 0 else math.nan
    sampling = jackknife(np.sqrt(np.maximum(without.mean(axis=0), 0.0)) if len(w) > 1 else [])
    return Sampled(value, _total(sampling, estimator), sampling, estimator, num)


def _total(sampling: float, estimator: float) -> float:
    parts = [p for p in (sampling, estimator) if math.isfinite(p)]
    return float(math.sqrt(sum(p * p for p in parts))) if parts else math.nan


def text(record: dict, key: str, digits: int = 4) -> str:
    """``"176.7 ± 12"`` (the figure with its standard error), or the figure alone when it has
    none; B_simple reported as a bound reads ``"≥ 84.07 (95 %)"``."""
    value = record.get(key)
    if value is None:
        return "-"
    if key == "b_simple" and record.get("b_simple_kind") == "lower bound":
        return f"≥ {value:.{digits}g} ({100 * record.get('b_simple_confidence', 0.95):.0f} %)"
    stderr = record.get(f"{key}_stderr")
    if stderr is None or not math.isfinite(stderr):
        return f"{value:.{digits}g}"
    return f"{value:.{digits}g} ± {stderr:.2g}"
