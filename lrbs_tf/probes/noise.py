"""Gradient-noise statistics at fixed weights: Tr C, ‖g‖², the simple noise scale, C versus H.

For per-example gradients g_i on n examples with mean ḡ, the gradient covariance is
C = (1/n) Σ (g_i − ḡ)(g_i − ḡ)ᵀ (the paper's C, whose 1/S multiple is the mini-batch noise).
Reported (McCandlish, Kaplan, Amodei et al. 2018, "An Empirical Model of Large-Batch Training"):

* ``trace_c`` = Tr C = (1/n) Σ ‖g_i − ḡ‖², and ``trace_c_unbiased`` with n/(n−1);
* ``grad_norm_sq`` = ‖ḡ‖² and ``grad_norm_sq_unbiased`` = ‖ḡ‖² − Tr C_unbiased / n (an
  unbiased estimate of the true ‖g‖²);
* ``b_simple`` = Tr C / ‖g‖² (unbiased parts), the batch size where noise and signal balance.

How the sums Σ g_i and Σ ‖g_i‖² are obtained (``noise_method`` in the output):

* ``"exact-norms"`` (the default whenever every layer with weights has a rule):
  :class:`~lrbs_tf.probes.noise_norms.PerExampleNorms`, the per-example gradient norms from one
  ordinary backward pass (Goodfellow 2015, arXiv 1510.01799; Bu et al. 2022, arXiv
  2205.10683), exact, at about the cost of a gradient;
* ``"microbatch(m=…)"``: :class:`MicroBatchGradients`, k ordinary gradients of micro-batches of
  m examples (McCandlish et al. 2018, App. A.1). Their covariance is C/m for examples drawn
  independently, so Tr C = m · Tr Cov(micro-batch gradients); over a random partition of the n
  examples the unbiased estimates are unbiased for the exact ones. Used when ``microbatch`` > 1
  is asked for, when a layer has no exact rule (``noise_layers_without_rule`` names them) and
  with BatchNorm in batch mode (then the noise of BatchNorm over m examples);
* ``"per-example-gradients"``: :class:`PerExampleGradients`, every g_i through
  ``tf.vectorized_map`` — the test oracle, and what :func:`compare_with_hessian` needs; on
  convolutions pfor has no vectorised Conv2DBackpropFilter and loops over the examples (it
  logs "Conv2DBackpropFilter uses a while_loop"), and it holds chunk × parameters floats.

Per-example norms and gradients use BatchNorm's moving statistics (a batch of one has no batch
statistics).

:func:`compare_with_hessian` checks the paper's Assumption 2 (C ≈ H): Tr C / Tr H and the overlap
of their top-k eigenvector subspaces (1 = same subspace).
"""

from __future__ import annotations

import logging
import math

import numpy as np
import tensorflow as tf

from lrbs_tf.probes import sampling, spectral
from lrbs_tf.probes.hessian import HessianOperator
from lrbs_tf.probes.noise_norms import (
    NoExactRule,
    PerExampleNorms,
    chunk_group_counts,
    group_sums,
)

log = logging.getLogger(__name__)


class PerExampleGradients:
    """Per-example (or per-micro-batch) gradients of the operator's model at fixed weights,
    through ``tf.vectorized_map``: the oracle of the faster estimators, and the gradients
    :func:`compare_with_hessian` needs."""

    GROUPS = 8  # chunks are summed into this many groups, for jackknife standard errors
    layers_without_rule: list = []

    def __init__(self, op: HessianOperator, microbatch: int = 1, chunk: int = 64):
        self.op = op
        self.microbatch = int(microbatch)
        self.chunk = int(chunk)
        if op.num_examples < 2 * self.microbatch:
            raise ValueError(
                f"need at least two micro-batches of {self.microbatch} examples, "
                f"have {op.num_examples} examples"
            )
        m = self.microbatch
        self.count = op.num_examples // m  # micro-batches used (a partial one is dropped)
        # at least GROUPS chunks when there are enough micro-batches (for the jackknife)
        self.chunk = max(1, min(self.chunk, -(-self.count // self.GROUPS)))
        self.xs = tf.reshape(op.x[: self.count * m], [-1, m] + list(op.x.shape[1:]))
        self.ys = tf.reshape(op.y[: self.count * m], [-1, m] + list(op.y.shape[1:]))
        spec_x = tf.TensorSpec([None, m] + list(op.x.shape[1:]), op.x.dtype)
        spec_y = tf.TensorSpec([None, m] + list(op.y.shape[1:]), op.y.dtype)
        self._fn = tf.function(self._grads, input_signature=[spec_x, spec_y])
        self._moments = tf.function(self._moments_impl)
        self.method = "per-example-gradients" + (f"(m={m})" if m > 1 else "")

    def _grads(self, xs, ys):
        op = self.op
        training = op.bn_mode == "batch" and self.microbatch > 1

        def one(args):
            return op.batch_gradient(*args, training=training)

        return tf.vectorized_map(one, (xs, ys))

    def _moments_impl(self):
        chunk, chunks, groups = self.chunk, -(-self.count // self.chunk), self.GROUPS

        def partial(replica, replicas):
            total = tf.zeros([groups, self.op.dim], tf.float64)
            sq = tf.zeros([groups], tf.float64)
            for c in tf.range(replica, chunks, replicas):
                g = tf.cast(
                    self._grads(
                        self.xs[c * chunk : (c + 1) * chunk], self.ys[c * chunk : (c + 1) * chunk]
                    ),
                    tf.float64,
                )
                one_hot = tf.one_hot(c % groups, groups, dtype=tf.float64)
                total += one_hot[:, None] * tf.reduce_sum(g, axis=0)[None, :]
                sq += one_hot * tf.reduce_sum(g * g)
            return [total, sq]

        return self.op.replica_sum(partial)

    def moments(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(Σ g_i, Σ ‖g_i‖², n)`` per group of chunks (chunk ``c`` in group ``c % GROUPS``),
        over the micro-batches in float64, split over the replicas."""
        total, sq = self._moments()
        return total.numpy(), sq.numpy(), chunk_group_counts(self.count, self.chunk, self.GROUPS)

    def batches(self):
        """Yield arrays of flat gradients (micro-batches × parameters), ``chunk`` at a time."""
        for start in range(0, self.count, self.chunk):
            yield self._fn(
                self.xs[start : start + self.chunk], self.ys[start : start + self.chunk]
            ).numpy()


class MicroBatchGradients:
    """k = ⌊n/m⌋ ordinary gradients g_j of the mean loss over consecutive micro-batches of m
    examples, one backward pass each (nothing per example, nothing through pfor).

    :meth:`moments` returns ``(Σ_j g_j, Σ_j ‖g_j‖², k_group)`` per group (micro-batch ``j`` in
    group ``j % GROUPS``), float64, summed over the replicas; with :func:`_noise` (``m`` times
    the covariance of the g_j) Tr C and ‖g‖² come out unbiased for independent examples.
    BatchNorm uses each micro-batch's statistics in ``bn_mode="batch"`` (m > 1).
    """

    GROUPS = 8

    def __init__(self, op: HessianOperator, microbatch: int, layers_without_rule=()):
        self.op, self.microbatch = op, int(microbatch)
        if self.microbatch < 1 or op.num_examples < 2 * self.microbatch:
            raise ValueError(
                f"need at least two micro-batches of {self.microbatch} examples, "
                f"have {op.num_examples} examples"
            )
        self.count = op.num_examples // self.microbatch
        self.method = f"microbatch(m={self.microbatch})"
        self.layers_without_rule = list(layers_without_rule)
        self._moments = tf.function(self._moments_impl, autograph=False)  # as PerExampleNorms

    def _moments_impl(self):
        op, m = self.op, self.microbatch
        training = op.bn_mode == "batch" and m > 1

        def one(j):
            g = op.batch_gradient(op.x[j * m : (j + 1) * m], op.y[j * m : (j + 1) * m], training)
            g = tf.cast(g, tf.float64)
            return g, tf.reduce_sum(g * g)

        return op.replica_sum(
            lambda replica, replicas: group_sums(
                one, self.count, self.GROUPS, op.dim, replica, replicas
            )
        )

    def moments(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        total, sq = self._moments()
        counts = np.bincount(np.arange(self.count) % self.GROUPS, minlength=self.GROUPS)
        return total.numpy(), sq.numpy(), counts.astype(np.float64)


def fallback_microbatch(num_examples: int) -> int:
    """m of the micro-batch estimator when no exact rule applies: about 64 micro-batches, m
    between 2 (BatchNorm statistics need two examples) and 32; 1 below 4 examples."""
    return int(min(32, max(2, num_examples // 64), max(1, num_examples // 2)))


def noise_estimator(op: HessianOperator, microbatch: int = 1, chunk: int | None = None):
    """The estimator of Σ g_i and Σ ‖g_i‖² :func:`gradient_noise` uses by default: exact
    per-example norms when ``microbatch`` is 1 and every layer has a rule, else micro-batches
    (of ``microbatch``, or :func:`fallback_microbatch` examples)."""
    if microbatch > 1:
        return MicroBatchGradients(op, microbatch)
    try:
        return PerExampleNorms(op, chunk)
    except NoExactRule as e:
        m = fallback_microbatch(op.num_examples)
        log.info("gradient noise from micro-batches of %d examples: %s", m, e)
        return MicroBatchGradients(op, m, layers_without_rule=e.layers)


def gradient_noise(
    op: HessianOperator,
    microbatch: int = 1,
    chunk: int | None = None,
    per=None,
) -> dict:
    """Tr C, ‖g‖² and B_simple over the operator's examples, with a jackknife standard error
    of B_simple over groups of examples, and ``noise_method`` / ``noise_layers_without_rule``
    (see the module docstring). ``per``: an estimator to reuse (each is traced once), by
    default :func:`noise_estimator`'s; ``chunk``: examples per backward pass of the exact
    norms (at most the operator's batch size)."""
    per = per or noise_estimator(op, microbatch, chunk)
    totals, sqs, counts = per.moments()
    out = _noise(totals.sum(axis=0), float(sqs.sum()), int(counts.sum()), per.microbatch)
    without = [
        _noise(
            totals.sum(axis=0) - totals[g],
            float(sqs.sum() - sqs[g]),
            int(counts.sum() - counts[g]),
            per.microbatch,
        )
        for g in range(len(counts))
        if counts[g] and counts.sum() - counts[g] >= 2
    ]
    for key in JACKKNIFED:
        out[f"{key}_stderr"] = sampling.jackknife([w[key] for w in without])
    out["b_simple_point"], out["b_simple_point_stderr"] = out["b_simple"], out["b_simple_stderr"]
    out.update(b_simple_or_bound(out, len(without)))
    out["noise_method"] = per.method
    out["noise_layers_without_rule"] = list(per.layers_without_rule)
    return out


JACKKNIFED = ("trace_c", "trace_c_unbiased", "grad_norm_sq", "grad_norm_sq_unbiased", "b_simple")


def b_simple_or_bound(noise: dict, groups: int) -> dict:
    """B_simple as an estimate when the unbiased ‖g‖² is significantly above zero (more than
    t_{0.975, groups−1} jackknife standard errors), else a lower bound: B_simple ≥
    (Tr C − t·SE) / (‖g‖² + t·SE), each side one-sided at 97.5 %, so at least 95 % jointly
    (never inf: near a minimum ‖g‖² is often indistinguishable from 0). Returns ``b_simple``,
    ``b_simple_kind`` (``estimate`` or ``lower bound``) and, for a bound, its confidence and a
    note; the bound's ``b_simple_stderr`` is NaN (it has none). The plain ratio and its
    jackknife error stay in ``b_simple_point`` and ``b_simple_point_stderr``."""
    t = sampling.t_quantile(groups)
    g2, g2_se = noise["grad_norm_sq_unbiased"], noise["grad_norm_sq_unbiased_stderr"]
    if math.isfinite(g2_se) and g2 > t * g2_se:
        return {"b_simple_kind": "estimate"}
    low_c = noise["trace_c_unbiased"] - t * noise["trace_c_unbiased_stderr"]
    high_g = g2 + t * g2_se if math.isfinite(g2_se) else math.inf
    bound = max(low_c, 0.0) / high_g if high_g > 0 else 0.0
    return {
        "b_simple": bound if math.isfinite(bound) else 0.0,
        "b_simple_stderr": math.nan,
        "b_simple_kind": "lower bound",
        "b_simple_confidence": 0.95,
        "b_simple_note": (
            f"‖g‖² = {g2:.3g} ± {g2_se:.2g} is not significantly above 0 on "
            f"{noise['num_examples']} examples: B_simple ≥ {bound:.4g} (95 %)"
        ),
    }


def _noise(total: np.ndarray, sq_norms: float, count: int, microbatch: int) -> dict:
    mean = total / count
    mean_sq = float(mean @ mean)
    cov_trace = (sq_norms / count - mean_sq) * microbatch  # per-example C
    cov_trace_unbiased = cov_trace * count / (count - 1)
    grad_sq_unbiased = mean_sq - cov_trace_unbiased / (count * microbatch)
    return {
        "trace_c": cov_trace,
        "trace_c_unbiased": cov_trace_unbiased,
        "grad_norm_sq": mean_sq,
        "grad_norm_sq_unbiased": grad_sq_unbiased,
        "b_simple": cov_trace_unbiased / grad_sq_unbiased if grad_sq_unbiased > 0 else math.inf,
        "b_simple_biased": cov_trace / mean_sq if mean_sq > 0 else math.inf,
        "num_examples": count * microbatch,
        "microbatch": microbatch,
    }


def covariance_matvec(op: HessianOperator, microbatch: int = 1, max_examples: int = 256):
    """``(matvec, dim)`` of C from stored per-example gradients of the first examples."""
    per = PerExampleGradients(op, microbatch)
    rows, seen = [], 0
    for grads in per.batches():
        rows.append(grads.astype(np.float32))
        seen += len(grads) * microbatch
        if seen >= max_examples:
            break
    G = np.concatenate(rows)[: max(2, max_examples // microbatch)].astype(np.float64)
    mean = G.mean(axis=0)
    G -= mean
    n = len(G)

    def matvec(v):
        return microbatch * (G.T @ (G @ v)) / n

    return matvec, op.dim


def compare_with_hessian(
    op: HessianOperator,
    k: int = 5,
    microbatch: int = 1,
    max_examples: int = 256,
    trace_h: float | None = None,
    seed: int = 0,
) -> dict:
    """Tr C / Tr H and the overlap of the top-k eigenvector subspaces of C and H."""
    c_matvec, dim = covariance_matvec(op, microbatch, max_examples)
    top_c = spectral.top_eigenvalues(
        c_matvec, dim, k=k, tol=1e-3, max_steps=60, seed=seed, return_vectors=True
    )
    top_h = spectral.top_eigenvalues(
        op.matvec, dim, k=k, tol=1e-3, max_steps=60, seed=seed, return_vectors=True
    )
    if trace_h is None:
        trace_h = spectral.hutchpp_trace(op.matvec, dim, num=60, seed=seed).value
    trace_c = spectral.hutchpp_trace(c_matvec, dim, num=60, seed=seed).value
    return {
        "trace_c_over_trace_h": trace_c / trace_h if trace_h else math.nan,
        "trace_c": trace_c,
        "trace_h": trace_h,
        "top_c": top_c.eigenvalues.tolist(),
        "top_h": top_h.eigenvalues.tolist(),
        "top_k_overlap": spectral.subspace_overlap(top_c.eigenvectors, top_h.eigenvectors),
        "random_overlap_baseline": k / dim,
        "k": k,
        "covariance_examples": max_examples,
    }
