"""The loss landscape between and around trained models (paper Fig. 4).

:func:`interpolate` evaluates loss and accuracy along θ(α) = (1 − α)θ₁ + αθ₂ (Keskar et al.
2017; Goodfellow et al. 2015). BatchNorm needs a decision, since its moving statistics are not
parameters of the loss:

* ``bn="recompute"`` (default, the honest choice): at every α the moving mean and variance are
  re-estimated from training examples with the interpolated weights (average of per-batch
  statistics over ``recompute_examples`` examples, in training mode), then the model is
  evaluated in inference mode. Even at α = 0 this differs slightly from model 1 as trained,
  whose statistics are exponential averages collected while it moved.
* ``bn="interpolate"``: the moving statistics are interpolated like the weights (variances
  clipped at 1e-6 outside [0, 1]); α = 0 and α = 1 reproduce the two models exactly.

:func:`random_plane` evaluates the loss on a 2-D plane around one model spanned by two random
filter-normalised directions (Li et al. 2018): each direction's slice for an output filter or
unit is scaled to the norm of the model's own slice; BatchNorm and bias directions are zero
and the model's moving statistics are kept.

Neither changes the models passed in: all work happens on a private copy.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from lrbs_tf import compat
from lrbs_tf.probes.hessian import sparse_softmax_cross_entropy


def _copy(model: keras.Model) -> keras.Model:
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone


class _Evaluator:
    """Loss and accuracy of a model copy on fixed data, compiled once per batch shape."""

    def __init__(self, copy: keras.Model, batch_size: int = 1000):
        self.copy, self.batch_size = copy, batch_size

        @tf.function(reduce_retracing=True)
        def step(x, y):
            logits = self.copy(x, training=False)
            loss = tf.reduce_sum(sparse_softmax_cross_entropy(y, logits))
            correct = tf.reduce_sum(
                tf.cast(
                    tf.equal(tf.argmax(logits, -1, output_type=tf.int32), tf.cast(y, tf.int32)),
                    tf.float32,
                )
            )
            return loss, correct

        self.step = step

    def __call__(self, x, y) -> tuple[float, float]:
        loss = correct = 0.0
        for start in range(0, len(y), self.batch_size):
            batch_loss, batch_correct = self.step(
                x[start : start + self.batch_size], y[start : start + self.batch_size]
            )
            loss += float(batch_loss)
            correct += float(batch_correct)
        return loss / len(y), correct / len(y)


def recompute_bn_statistics(model: keras.Model, x, batch_size: int = 500) -> None:
    """Set every BatchNorm's moving statistics to the mean of per-batch statistics over ``x``
    (forward passes in training mode with momentum (k−1)/k for the k-th batch)."""
    layers = [
        layer
        for layer in compat.all_layers(model)
        if isinstance(layer, keras.layers.BatchNormalization)
    ]
    if not layers:
        return
    saved = [layer.momentum for layer in layers]
    try:
        for k, start in enumerate(range(0, len(x), batch_size), start=1):
            for layer in layers:
                layer.momentum = (k - 1) / k
            model(x[start : start + batch_size], training=True)
    finally:
        for layer, momentum in zip(layers, saved):
            layer.momentum = momentum


def interpolate(
    model_a: keras.Model,
    model_b: keras.Model,
    train_xy,
    val_xy,
    alphas=np.linspace(-1, 2, 31),
    bn: str = "recompute",
    recompute_examples: int = 2000,
    batch_size: int = 1000,
) -> dict:
    """Loss and accuracy on ``train_xy`` and ``val_xy`` along (1 − α)θ_a + αθ_b."""
    if bn not in ("recompute", "interpolate"):
        raise ValueError(f"bn must be 'recompute' or 'interpolate', got {bn!r}")
    if len(model_a.weights) != len(model_b.weights) or any(
        a.shape != b.shape for a, b in zip(model_a.weights, model_b.weights)
    ):
        raise ValueError("the two models have different architectures")
    copy = _copy(model_a)
    evaluate = _Evaluator(copy, batch_size)
    wa = [w.numpy() for w in model_a.weights]
    wb = [w.numpy() for w in model_b.weights]
    out = {
        key: []
        for key in ("train_loss", "train_accuracy", "validation_loss", "validation_accuracy")
    }
    for alpha in alphas:
        for var, a, b in zip(copy.weights, wa, wb):
            value = (1 - alpha) * a + alpha * b
            if var.path.endswith("moving_variance"):
                value = np.maximum(value, 1e-6)
            var.assign(value.astype(a.dtype))
        if bn == "recompute":
            recompute_bn_statistics(copy, train_xy[0][:recompute_examples])
        for split, (x, y) in (("train", train_xy), ("validation", val_xy)):
            loss, acc = evaluate(x, y)
            out[f"{split}_loss"].append(loss)
            out[f"{split}_accuracy"].append(acc)
    return dict(
        out,
        alphas=[float(a) for a in alphas],
        bn=bn,
        recompute_examples=recompute_examples if bn == "recompute" else None,
    )


def filter_normalized_direction(model: keras.Model, rng: np.random.Generator) -> list:
    """A random direction with each output filter's slice scaled to the model's own norm."""
    direction = []
    for var in model.weights:
        w = var.numpy()
        if not var.trainable or w.ndim < 2:  # BN parameters and statistics, biases: zero
            direction.append(np.zeros_like(w))
            continue
        d = rng.standard_normal(w.shape).astype(w.dtype)
        axes = tuple(range(w.ndim - 1))  # Keras kernels keep output units on the last axis
        # (np.linalg.norm takes at most two axes: a convolution's kernel has three here)
        d *= _norms(w, axes) / (_norms(d, axes) + 1e-12)
        direction.append(d)
    return direction


def _norms(w: np.ndarray, axes: tuple) -> np.ndarray:
    return np.sqrt(np.sum(np.square(w), axis=axes, keepdims=True))


def random_plane(
    model: keras.Model,
    xy,
    span: float = 1.0,
    points: int = 11,
    seed: int = 0,
    batch_size: int = 1000,
) -> dict:
    """Loss on θ + a·d₁ + b·d₂ for a, b in [−span, span] (``points`` × ``points`` grid)."""
    rng = np.random.default_rng(seed)
    d1, d2 = filter_normalized_direction(model, rng), filter_normalized_direction(model, rng)
    copy = _copy(model)
    evaluate = _Evaluator(copy, batch_size)
    base = [w.numpy() for w in model.weights]
    grid = np.linspace(-span, span, points)
    loss = np.zeros((points, points))
    for i, a in enumerate(grid):
        for j, b in enumerate(grid):
            for var, w, u, v in zip(copy.weights, base, d1, d2):
                var.assign(w + a * u + b * v)
            loss[i, j] = evaluate(*xy)[0]
    return {"coordinates": grid.tolist(), "loss": loss.tolist(), "seed": seed, "span": span}
