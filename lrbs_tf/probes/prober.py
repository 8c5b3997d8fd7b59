"""Curvature and gradient-noise measurements of a model at its current weights.

:class:`Prober` holds one :class:`~lrbs_tf.probes.hessian.HessianOperator` on a fixed, seeded
subset of the training set (compiled once) and measures, each time it is called: λ_max (Lanczos,
warm-started from the previous top eigenvector), Tr H (Hutch++), ‖H‖_F (Hutchinson, and the
paper's finite-difference estimator), the gradient-noise statistics Tr C, ‖g‖² and B_simple,
and the stability line 2/η for the current learning rate. Used at the end of a run
(``run.py --probe``), during training (:class:`lrbs_tf.probes.callbacks.Sharpness`) and on saved
runs (``tools/probe.py``).
"""

from __future__ import annotations

import hashlib
import logging
import time

import numpy as np

from lrbs_tf.probes import sampling, spectral
from lrbs_tf.probes.finite_difference import finite_difference_frobenius
from lrbs_tf.probes.hessian import HessianOperator
from lrbs_tf.probes.noise import gradient_noise
from lrbs_tf.probes.settings import ProbeSettings

log = logging.getLogger(__name__)


def probe_subset(num_train: int, settings: ProbeSettings) -> np.ndarray:
    """Indices of the probe examples: a seeded choice without replacement, sorted."""
    rng = np.random.default_rng(settings.seed)
    return np.sort(rng.choice(num_train, size=settings.examples, replace=False))


def step_subset(num_train: int, indices: np.ndarray, batch: int, seed: int) -> np.ndarray:
    """The examples of the step sharpness: the first k·S probe examples (k = examples // S),
    or S seeded training examples when S exceeds the probe subset."""
    if batch <= len(indices):
        return indices[: (len(indices) // batch) * batch]
    if batch > num_train:
        raise ValueError(f"the step batch {batch} is larger than the training set ({num_train})")
    return np.sort(np.random.default_rng(seed + 7).choice(num_train, size=batch, replace=False))


class Prober:
    """Repeated curvature measurements of ``model`` on fixed subsets of ``(x, y)``.

    Two sharpnesses (λ_max of two Hessians), named in every output:

    * **width sharpness** (``width_sharpness``, also ``lambda_max``): the Hessian of the
      training loss with BatchNorm in ``settings.bn_mode`` (inference by default: the moving
      statistics) on ``settings.examples`` examples — the paper's measure of how wide the
      minimum is, a property of the function the network computes;
    * **step sharpness** (``step_sharpness``): the Hessian of the objective SGD steps on, the
      mean over mini-batches of size ``step_batch`` of the loss with BatchNorm statistics of
      each mini-batch, E_B[∇²L_B(θ)]. Linear stability analyses of SGD compare η with exactly
      this curvature: gradient descent on a quadratic is stable while η·λ_max < 2 (Cohen et
      al. 2021 find full-batch training hovering at λ_max ≈ 2/η, the edge of stability), and
      for SGD Wu, Ma & E (2018) show a minimum stays linearly stable only if the mean of the
      mini-batch Hessians satisfies the same bound (plus a noise condition). With BatchNorm
      the mini-batch Hessians are those of the batch-statistics loss, not of the inference
      network, so the 2/η line belongs with the step sharpness: on the Fashion-MNIST MLP the
      inference-mode λ_max of stably trained runs is 5-15 times 2/η.

    ``step_batch`` is the run's batch size S (``settings.step_batch_size`` overrides it); None
    and no override: no step sharpness. The step subset is the first k·S probe examples
    (k = examples // S), or S seeded training examples when S exceeds the probe subset. Every
    operator is traced once; the gradient-noise estimator (exact per-example gradient norms, or
    micro-batches where a layer has no rule: :func:`lrbs_tf.probes.noise.noise_estimator`) is
    kept and traced once too.
    """

    def __init__(
        self,
        model,
        x,
        y,
        settings: ProbeSettings,
        loss=None,
        on_call=None,
        step_batch: int | None = None,
    ):
        from lrbs_tf.probes.noise import noise_estimator

        self.settings = settings
        self.indices = probe_subset(len(y), settings)
        x, y = np.asarray(x), np.asarray(y)
        xs, ys = x[self.indices], y[self.indices]
        kwargs = dict(dtype=settings.dtype, method=settings.method, loss=loss, on_call=on_call)
        kwargs["groups"] = settings.groups
        self._model, self._xy, self._kwargs = model, (x, y), kwargs  # for step_sharpness_at
        self.op = HessianOperator(
            model, xs, ys, batch_size=settings.batch_size, bn_mode=settings.bn_mode, **kwargs
        )
        noise_n = settings.noise_examples
        self.noise_op = (
            self.op
            if noise_n == settings.examples
            else HessianOperator(
                model,
                xs[:noise_n],
                ys[:noise_n],
                batch_size=settings.batch_size,
                bn_mode=settings.bn_mode,
                **kwargs,
            )
        )
        self.noise = noise_estimator(self.noise_op)
        self.step_batch = settings.step_batch_size or step_batch
        self.step_indices = None
        self.step_op = None
        if self.step_batch:
            self.step_indices = step_subset(len(y), self.indices, self.step_batch, settings.seed)
            self.step_op = HessianOperator(
                model,
                x[self.step_indices],
                y[self.step_indices],
                batch_size=self.step_batch,
                bn_mode="batch",
                **kwargs,
            )
        self._v0 = self._v0_step = None
        self.calls = 0

    def describe(self) -> dict:
        digest = hashlib.sha1(self.indices.tobytes()).hexdigest()[:16]
        out = dict(
            self.op.settings(),
            **{k: v for k, v in vars(self.settings).items() if k not in ("batch_size",)},
            subset_fingerprint=digest,
            width_sharpness_bn=self.settings.bn_mode,
        )
        if self.step_op is not None:
            out.update(
                step_batch_size=self.step_batch,
                step_examples=len(self.step_indices),
                step_sharpness_bn="batch statistics of each mini-batch of S",
            )
        return out

    def trace_counts(self) -> dict:
        """Traces of every compiled function (each should be traced once)."""
        out = {f"width_{k}": v for k, v in self.op.trace_counts().items()}
        if self.step_op is not None:
            out.update({f"step_{k}": v for k, v in self.step_op.trace_counts().items()})
        out["noise_moments"] = self.noise._moments.experimental_get_tracing_count()
        return out

    def sharpness(self, op, v0, seed):
        s = self.settings
        return spectral.top_eigenvalues(
            op.matvec,
            op.dim,
            k=s.top_k,
            tol=s.lanczos_tol,
            max_steps=s.lanczos_max_steps,
            seed=seed,
            v0=v0,
            return_vectors=True,
            dtype=np.float32 if op.dtype == "float32" else np.float64,
        )

    def __call__(self, lr: float | None = None, full: bool = True) -> dict:
        """Measure at the model's current weights. ``full=False`` skips the finite-difference
        Frobenius estimate and uses fewer trace samples (for use during training)."""
        tick = time.time()
        s = self.settings
        for op in {id(o): o for o in (self.op, self.noise_op, self.step_op) if o}.values():
            op.refresh()
        seed = s.seed + 1000 * self.calls
        self.calls += 1
        eig = self.sharpness(self.op, self._v0, seed)
        self._v0 = eig.eigenvectors[0]
        hvp_seconds = self.op.last_seconds  # one HVP, traced already
        width_se = sampling.jackknife(sampling.rayleigh_leave_one_out(self.op, self._v0))
        trace_n, frob_n = sample_counts(s, full)
        self._say_left(eig, trace_n, frob_n, full, time.time() - tick, hvp_seconds)
        trace = sampling.hutchpp_trace(self.op, num=trace_n, seed=seed + 1)
        frob = sampling.hutchinson_frobenius(self.op, num=frob_n, seed=seed + 2)
        out = {
            "width_sharpness": float(eig.eigenvalues[0]),
            "lambda_max": float(eig.eigenvalues[0]),
            "width_sharpness_stderr": width_se,
            "lambda_max_stderr": width_se,
            "top_eigenvalues": eig.eigenvalues.tolist(),
            "lanczos_residuals": eig.residuals.tolist(),
            "lanczos_converged": eig.converged.tolist(),
            "lanczos_matvecs": eig.matvecs,
            **_sampled("trace", trace),
            **_sampled("frobenius", frob),
            "sampling_groups": self.op.groups,
            "probe_loss": self.op.loss_value(),
            "hvp_seconds": hvp_seconds,  # one HVP on these examples, traced
        }
        if self.step_op is not None:
            out.update(self._step_sharpness(seed + 4))
        if full and s.finite_difference:
            fd = finite_difference_frobenius(
                self.op, num=s.frobenius_samples, eps=s.fd_eps, seed=seed + 3
            )
            out.update(
                frobenius_fd=fd.value,
                frobenius_fd_stderr=fd.stderr,
                frobenius_fd_sampling_stderr=fd.sampling_stderr,
                frobenius_fd_step_error=fd.step_error,
                frobenius_fd_at_2eps=fd.at_2eps,
                fd_eps=s.fd_eps,
            )
        noise = gradient_noise(self.noise_op, per=self.noise)
        out.update({NOISE_NAMES.get(k, k): v for k, v in noise.items()})
        if lr:
            out["lr"] = float(lr)
            out["stability_2_over_lr"] = 2.0 / float(lr)
            if "step_sharpness" in out:
                out["lr_times_step_sharpness"] = float(lr) * out["step_sharpness"]
        out["seconds"] = time.time() - tick
        return out

    def step_sharpness_at(self, batch: int) -> dict:
        """The step sharpness at the model's current weights for another batch size S (its
        own step subset, BatchNorm statistics of mini-batches of S): to compare candidate
        batch sizes from one point (``lrbs-scale``). Builds and traces an operator per call."""
        x, y = self._xy
        indices = step_subset(len(y), self.indices, batch, self.settings.seed)
        op = HessianOperator(
            self._model, x[indices], y[indices], batch_size=batch, bn_mode="batch", **self._kwargs
        )
        step = self.sharpness(op, None, self.settings.seed + 4)
        loo = sampling.rayleigh_leave_one_out(op, step.eigenvectors[0])
        return dict(
            step_sharpness=float(step.eigenvalues[0]),
            step_sharpness_stderr=sampling.jackknife(loo),
            step_lanczos_matvecs=step.matvecs,
            step_lanczos_converged=bool(step.converged[0]),
            step_batch_size=batch,
            step_examples=len(indices),
        )

    def _step_sharpness(self, seed: int) -> dict:
        step = self.sharpness(self.step_op, self._v0_step, seed)
        self._v0_step = step.eigenvectors[0]
        loo = sampling.rayleigh_leave_one_out(self.step_op, self._v0_step)
        return dict(
            step_sharpness=float(step.eigenvalues[0]),
            step_sharpness_stderr=sampling.jackknife(loo),
            step_sampling_groups=self.step_op.groups,
            step_lanczos_matvecs=step.matvecs,
            step_lanczos_converged=bool(step.converged[0]),
            step_batch_size=self.step_batch,
        )

    def _say_left(self, eig, trace_n, frob_n, full, seconds: float, hvp_seconds: float) -> None:
        """The width sharpness, and an estimate of the rest from the cost of one HVP: the step
        sharpness as many HVPs as the width's, Tr H and ‖H‖_F theirs, the paper's finite
        differences two gradients (≈ 0.8 HVP) per direction, the noise about two HVPs' worth
        per pass over its examples."""
        s = self.settings
        left = (
            (eig.matvecs if self.step_op is not None else 0)
            + trace_n
            + frob_n
            + (FD_HVPS * s.frobenius_samples if full and s.finite_difference else 0)
            + 2 * s.noise_examples / max(s.examples, 1)
        )
        # a first call also traces the group HVP, the step HVP (with a step sharpness), the
        # gradient (with finite differences) and the noise, each about as long as the HVP's
        # own trace (what Lanczos took beyond its HVPs)
        traces = 2 + (self.step_op is not None) + (full and s.finite_difference)
        first_trace = max(seconds - eig.matvecs * hvp_seconds, 0.0)
        tracing = traces * first_trace if self.calls == 1 else 0.0
        log.info(
            "probe: width sharpness %.4g (%d HVPs, %.1f s); about %.0f s more for the step "
            "sharpness, Tr H, ‖H‖_F and B_simple",
            eig.eigenvalues[0],
            eig.matvecs,
            seconds,
            hvp_seconds * left + tracing,
        )


# The paper's finite differences take two gradients per direction; a gradient costs about 0.4
# HVP (measured on examples/small_cnn.py, 1000 examples: 279 against 689 ms; 0.46 on 256).
FD_HVPS = 2 * 0.4


def sample_counts(settings: ProbeSettings, full: bool) -> tuple[int, int]:
    """HVPs of Tr H (Hutch++) and of ‖H‖_F (Hutchinson): the settings', or a third of them
    without ``full`` (during training)."""
    if full:
        return settings.trace_matvecs, settings.frobenius_samples
    return max(9, settings.trace_matvecs // 3), max(5, settings.frobenius_samples // 3)


def pass_cost(settings: ProbeSettings, found: dict, full: bool) -> float:
    """A probe's passes over its examples in HVPs, given the Lanczos steps a probe ``found``
    took: what makes a full and a light probe's times comparable."""
    trace_n, frob_n = sample_counts(settings, full)
    lanczos = found.get("lanczos_matvecs", 0) + found.get("step_lanczos_matvecs", 0)
    fd = FD_HVPS * settings.frobenius_samples if full and settings.finite_difference else 0.0
    noise = 2.0 * settings.noise_examples / max(settings.examples, 1)
    return lanczos + 2 + trace_n + frob_n + fd + noise  # 2: the jackknife's group passes


def _sampled(name: str, found: sampling.Sampled) -> dict:
    """A figure with its total standard error and the parts (see :mod:`.sampling`)."""
    return {
        name: found.value,
        f"{name}_stderr": found.stderr,
        f"{name}_sampling_stderr": found.sampling_stderr,
        f"{name}_estimator_stderr": found.estimator_stderr,
    }


NOISE_NAMES = {"num_examples": "noise_num_examples", "microbatch": "noise_microbatch"}
