"""Growing the batch size from the measured gradient noise scale, at a fixed η/S.

McCandlish et al. (2018) show that the simple noise scale B_simple = Tr C / |g|² is the batch
size up to which a larger batch cuts the number of steps almost in proportion: below it, each
step is dominated by noise and S× the batch with η = (η/S)·S is worth about S× the steps. The
paper's SDE view says the same at a fixed η/S: the path depends on η/S only, so as long as
the SDE holds, growing S with η = (η/S)·S changes how many steps an epoch takes, not where SGD
goes. The SDE stops holding when a step is no longer small (η·λ_step approaches 2) or when S
approaches N (the noise shrinks by (N − S)/(N − 1)).

:class:`BatchGrowth` puts this together. After each epoch it measures B_simple on a fixed
subset of the training set, smooths it (geometric mean with the previous estimate), and sets
the next epoch's S to the smoothed B_simple — never smaller than the current S, at most
``max_growth`` times it, and below every limit: S ≤ ``max_fraction``·N, η·λ_step < ``lr_sharpness``
(η = (η/S)·S, with λ_step measured at the current S) and S ≤ ``max_batch``. It is a Keras callback
for a loop of one-epoch fits (read ``batch_size`` before each), and the logic behind
``run.py --bs-schedule adaptive``.
"""

from __future__ import annotations

import logging
import math

import keras
import numpy as np

from lrbs_tf.probes.settings import ProbeSettings
from lrbs_tf.progress import duration

log = logging.getLogger(__name__)


class BatchGrowth(keras.callbacks.Callback):
    """See the module docstring.

    Args:
        data: ``(x, y)`` training examples to probe on.
        ratio: the fixed η/S.
        start: S of the first epoch.
        num_train: N (default: ``len(y)``).
        lr_sharpness: the largest η·λ_step allowed (default 1: well inside the linear-stability
            limit 2, where the discrete-time correction to the SDE is still moderate).
        max_fraction: the largest S/N allowed (default 0.1: finite-population factor ≥ 0.9).
        max_growth: the largest factor S may grow by from one epoch to the next.
        max_batch: an absolute cap on S.
        examples, noise_examples: probe subset sizes.
    """

    def __init__(
        self,
        data,
        ratio: float,
        start: int,
        num_train: int | None = None,
        lr_sharpness: float = 1.0,
        max_fraction: float = 0.1,
        max_growth: float = 2.0,
        max_batch: int | None = None,
        examples: int = 1000,
        noise_examples: int = 500,
        seed: int = 0,
    ):
        super().__init__()
        self.x, self.y = np.asarray(data[0]), np.asarray(data[1])
        self.ratio, self.batch_size = float(ratio), int(start)
        self.num_train = int(num_train or len(self.y))
        self.lr_sharpness, self.max_fraction = lr_sharpness, max_fraction
        self.max_growth, self.max_batch = max_growth, max_batch
        self.settings = ProbeSettings(
            examples=min(examples, len(self.y)),
            noise_examples=min(noise_examples, examples),
            finite_difference=False,
            seed=seed,
        )
        self.smoothed = None  # B_simple, geometric moving mean
        self.noise = None  # the gradient-noise estimator on a fixed subset (traced once)
        self.steps = {}  # S -> HessianOperator of the step sharpness at S (each traced once)
        self.vectors = {}  # S -> the last top eigenvector (Lanczos warm start)
        self.history = []  # one decision per epoch

    def restore(self, decisions: list[dict]) -> None:
        """Continue after a resume from the decisions recorded so far."""
        if decisions:
            self.history = list(decisions)
            self.batch_size = int(decisions[-1]["next_batch_size"])
            self.smoothed = decisions[-1]["b_simple_smoothed"]

    def on_epoch_end(self, epoch, logs=None):
        decision = self.decide(epoch)
        if logs is not None:
            logs.update(b_simple=decision["b_simple"], next_batch_size=decision["next_batch_size"])

    def decide(self, epoch: int) -> dict:
        """Measure at the current weights and choose the next epoch's S."""
        last = self.history[-1]["seconds"] if self.history else None
        log.info(
            "epoch %d: measuring B_simple on %d examples and the step sharpness at S = %d (%s)",
            epoch + 1,
            self.settings.noise_examples,
            self.batch_size,
            f"about {duration(last)}" + ("" if self.batch_size in self.steps else ", more: new S")
            if last
            else "the first measurement also compiles its functions",
        )
        measured = self.measure()
        b = measured["b_simple"]
        if math.isfinite(b) and b > 0:
            self.smoothed = b if self.smoothed is None else math.sqrt(self.smoothed * b)
        wanted = self.smoothed if self.smoothed is not None else self.batch_size
        limits = {
            "noise scale": wanted,
            "growth": self.max_growth * self.batch_size,
            "S/N": self.max_fraction * self.num_train,
        }
        if measured["step_sharpness"] > 0:
            limits["η·λ_step"] = self.lr_sharpness / (self.ratio * measured["step_sharpness"])
        if self.max_batch:
            limits["max"] = self.max_batch
        bound = min(limits, key=limits.get)
        chosen = max(self.batch_size, int(math.floor(limits[bound])))
        decision = {
            "epoch": epoch + 1,
            "batch_size": self.batch_size,
            "b_simple": b,
            "b_simple_stderr": measured["b_simple_stderr"],
            "b_simple_smoothed": self.smoothed,
            "step_sharpness": measured["step_sharpness"],
            "lr_times_step_sharpness": self.ratio * self.batch_size * measured["step_sharpness"],
            "next_batch_size": chosen,
            "bound_by": bound if chosen > self.batch_size else "unchanged",
            "seconds": measured["seconds"],
        }
        log.info(
            "epoch %d: B_simple %.4g ± %.2g (smoothed %.4g), step sharpness %.4g at S = %d; "
            "next S = %d (%s)",
            epoch + 1,
            b,
            measured["b_simple_stderr"],
            self.smoothed or math.nan,
            measured["step_sharpness"],
            self.batch_size,
            chosen,
            decision["bound_by"],
        )
        self.history.append(decision)
        self.batch_size = chosen
        return decision

    def measure(self) -> dict:
        """B_simple (exact per-example gradient norms, BatchNorm inference) and the step
        sharpness at the current S: what growth needs, no more."""
        import time

        from lrbs_tf.probes import spectral
        from lrbs_tf.probes.hessian import HessianOperator
        from lrbs_tf.probes.noise import gradient_noise, noise_estimator
        from lrbs_tf.probes.prober import probe_subset, step_subset

        tick = time.time()
        s, model = self.settings, self.model
        indices = probe_subset(len(self.y), s)
        if self.noise is None:
            n = s.noise_examples
            op = HessianOperator(
                model, self.x[indices[:n]], self.y[indices[:n]], batch_size=s.batch_size
            )
            self.noise = noise_estimator(op)
        S = self.batch_size
        if S not in self.steps:
            chosen = step_subset(len(self.y), indices, S, s.seed)
            self.steps[S] = HessianOperator(
                model, self.x[chosen], self.y[chosen], batch_size=S, bn_mode="batch"
            )
        step = self.steps[S]
        self.noise.op.refresh()
        step.refresh()
        noise = gradient_noise(self.noise.op, per=self.noise)
        eig = spectral.top_eigenvalues(
            step.matvec,
            step.dim,
            tol=s.lanczos_tol,
            max_steps=s.lanczos_max_steps,
            seed=s.seed,
            v0=self.vectors.get(S),
            return_vectors=True,
            dtype=np.float32,
        )
        self.vectors[S] = eig.eigenvectors[0]
        return {
            "b_simple": noise["b_simple"],
            "b_simple_stderr": noise["b_simple_stderr"],
            "step_sharpness": float(eig.eigenvalues[0]),
            "seconds": time.time() - tick,
        }
