"""SVAG: the test of the SDE itself (Li, Malladi & Arora 2021, "On the Validity of Modeling SGD
with Stochastic Differential Equations", arXiv 2102.12470).

With two independent batches b1, b2 of S examples and an amplification ℓ ≥ 1, one SVAG step is
a step of η/ℓ on

    a1·L(b1) + a2·L(b2),   a1 = (1 + √(2ℓ − 1))/2,   a2 = (1 − √(2ℓ − 1))/2.

Since a1 + a2 = 1 the mean gradient is the full gradient g, as for SGD; since
a1² + a2² = ℓ the gradient noise covariance is ℓ·C/S. So ℓ steps of SVAG cover the SDE time of
one SGD step (ℓ · η/ℓ) with the same diffusion ((η/ℓ)²·ℓ per step, ℓ steps), and as ℓ grows SVAG
converges to the Itô SDE dθ = −g dt + √(η/S)·R dW. If the loss curves of ℓ = 1, 2, 4 agree
against steps/ℓ, the SDE describes SGD at this η/S; if they do not, η/S equivalence cannot be
expected even at k = 1. ℓ = 1 is plain SGD (a2 = 0), the base branch itself.

:class:`SvagModel` runs SVAG steps on a model's variables through ``fit`` (every step's loss
on b1, S, the applied η and η/S in its :class:`~lrbs_tf.core.steplog.StepLog`, like the
ratio-scaled train step).
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from lrbs_tf.core.optimizers import RatioScaledOptimizer


def svag_weights(ell: float) -> tuple[float, float]:
    """``(a1, a2)`` of amplification ℓ ≥ 1: a1 + a2 = 1 and a1² + a2² = ℓ."""
    if not ell >= 1:
        raise ValueError(f"SVAG needs ℓ ≥ 1, got {ell!r}")
    root = math.sqrt(2 * ell - 1)
    return (1 + root) / 2, (1 - root) / 2


class SvagModel(keras.Model):
    """SVAG steps on the variables of ``inner`` (a built Keras model): ``fit`` it on
    :func:`lrbs_tf.scaling.stream.pairs` (each element two batches, stacked). ``loss`` is the
    per-example loss ``fn(y, outputs)``. Compile it with :meth:`compile_svag`; set ℓ and η with
    :meth:`set_step` (no new trace)."""

    def __init__(self, inner: keras.Model, loss, step_log=None):
        super().__init__(name=f"svag_{inner.name}")
        self.inner = inner
        self.per_example_loss = loss
        self.step_log = step_log
        with tf.init_scope():
            self.coefficients = tf.Variable([1.0, 0.0], trainable=False, name="svag_a")
        self.built = True

    def call(self, x, training=False):
        return self.inner(x, training=training)

    def compile_svag(self, steps_per_execution: int = 1, jit_compile: bool = False) -> None:
        """Plain SGD (η = the ratio-scaled optimizer's η/S × S), pre-built."""
        optimizer = RatioScaledOptimizer(keras.optimizers.SGD(0.0), ratio=1.0)
        self.compile(
            optimizer=optimizer, steps_per_execution=steps_per_execution, jit_compile=jit_compile
        )
        optimizer.build(self.inner.trainable_variables)

    def set_step(self, ell: float, lr: float, batch: int) -> None:
        """Amplification ℓ, step η (already divided by ℓ) and the batch S of each of b1, b2."""
        self.coefficients.assign(svag_weights(ell))
        self.optimizer.ratio.assign(lr / batch)

    def gradient(self, x1, y1, x2, y2, training: bool = True):
        """``(gradients, L(b1))``: the SVAG gradient ∇[a1·L(b1) + a2·L(b2)] at the current
        weights (BatchNorm with each batch's own statistics when ``training``)."""
        a = self.coefficients
        variables = self.inner.trainable_variables
        with tf.GradientTape() as tape:
            first = tf.reduce_mean(self.per_example_loss(y1, self.inner(x1, training=training)))
            second = tf.reduce_mean(self.per_example_loss(y2, self.inner(x2, training=training)))
            loss = tf.cast(a[0], first.dtype) * first + tf.cast(a[1], second.dtype) * second
        return tape.gradient(loss, variables), first

    def train_step(self, data):
        x, y = data
        grads, first = self.gradient(x[0], y[0], x[1], y[1])
        batch = tf.cast(tf.shape(x)[1], tf.float32)
        optimizer = self.optimizer
        optimizer.apply_step(grads, self.inner.trainable_variables, batch)
        if self.step_log is not None:
            lr = tf.convert_to_tensor(optimizer.learning_rate)
            self.step_log.record(
                optimizer.iterations,
                (first, batch, lr, tf.convert_to_tensor(optimizer.ratio)),
            )
        return {"loss": first}
