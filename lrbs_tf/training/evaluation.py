"""The loss and accuracy of a model over a whole data set at its current weights.

Keras' epoch ``loss`` is the running mean of the batch losses while the weights move, with
BatchNorm in training mode; it is not the loss of the weights a run ends with. The probes
(:mod:`lrbs_tf.probes`) measure curvature at fixed weights with BatchNorm in inference mode,
so an equal-loss comparison of minima (Fig. 3) must read the loss the same way:
:class:`DatasetLoss` evaluates the mean softmax cross-entropy and the accuracy of the model
over every example, BatchNorm in inference mode (moving statistics), in one compiled call with
the loop over chunks inside the graph (no Python per batch).
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf


class DatasetLoss:
    """``evaluator() -> {"loss": …, "accuracy": …}`` over all of ``(x, y)`` at the model's
    current weights (inference mode; sums in float64).

    Args:
        model: a Keras model producing logits (the toolkit's models do).
        x, y: the examples (numpy arrays or tensors; kept on the CPU, not copied again when
            they already are tensors).
        chunk: examples per forward pass inside the compiled loop (memory, not results).
        loss: another per-example loss ``fn(y, outputs)`` (a regression, say) instead of the
            softmax cross-entropy on integer labels; its ``accuracy`` is None.
    """

    def __init__(self, model: keras.Model, x, y, chunk: int = 5000, loss=None):
        if len(x) != len(y) or len(y) == 0:
            raise ValueError(f"need as many labels as examples (got {len(x)} and {len(y)})")
        self.model = model
        self.num_examples = int(len(y))
        self.chunk = int(chunk)
        self.loss = loss
        with tf.device("/cpu:0"):
            self.x = x if tf.is_tensor(x) else tf.constant(np.asarray(x))
            self.y = y if tf.is_tensor(y) else tf.constant(np.asarray(y))
            if loss is None:
                self.y = tf.cast(self.y, tf.int32)
        self._fn = tf.function(self._sums)

    def _sums(self):
        n, chunk = self.num_examples, self.chunk
        loss_sum = tf.constant(0.0, tf.float64)
        correct = tf.constant(0.0, tf.float64)
        for start in tf.range(0, n, chunk):
            x, y = self.x[start : start + chunk], self.y[start : start + chunk]
            outputs = self.model(x, training=False)
            if self.loss is not None:
                loss_sum += tf.reduce_sum(tf.cast(self.loss(y, outputs), tf.float64))
                continue
            logits = tf.cast(outputs, tf.float32)
            losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)
            hits = tf.equal(tf.argmax(logits, axis=-1, output_type=tf.int32), y)
            loss_sum += tf.reduce_sum(tf.cast(losses, tf.float64))
            correct += tf.reduce_sum(tf.cast(hits, tf.float64))
        return loss_sum / n, correct / n

    def __call__(self) -> dict:
        loss, accuracy = self._fn()
        return {"loss": float(loss), "accuracy": None if self.loss else float(accuracy)}

    def trace_count(self) -> int:
        return self._fn.experimental_get_tracing_count()
