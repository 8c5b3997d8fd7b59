"""What each train step carries and records: the per-step η/S riding with a batch
(:data:`RATIO_KEY`, :func:`split_step_ratio`) and the in-graph :class:`StepLog`."""

from __future__ import annotations

import tensorflow as tf


class StepLog:
    """In-graph record of every train step: batch loss, global batch size, applied η and η/S.

    The train step writes row ``count % capacity`` of a variable, so nothing leaves the graph
    per step (Keras stays asynchronous, and it works with XLA and ``steps_per_execution``);
    :class:`lrbs_tf.training.tensorboard.StepScalars` drains it to TensorBoard at the end of each
    epoch.
    Not a Keras weight: it is not saved with the model. Create it inside the strategy's scope
    when training under one; the first replica's row is kept (all replicas record the same,
    all-reduced values).
    """

    FIELDS = ("loss", "batch_size", "lr", "ratio")

    def __init__(self, capacity: int):
        self.capacity = int(capacity)
        self.distributed = tf.distribute.has_strategy()
        kwargs = dict(trainable=False, aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
        with tf.init_scope():
            self.rows = tf.Variable(
                tf.zeros([self.capacity, len(self.FIELDS)]), name="step_log_rows", **kwargs
            )
            self.steps = tf.Variable(
                tf.zeros([self.capacity], tf.int64), name="step_log_steps", **kwargs
            )
            self.count = tf.Variable(tf.constant(0, tf.int64), name="step_log_count", **kwargs)

    def record(self, step, values) -> None:
        i = self.count % self.capacity
        row = tf.stack([tf.cast(v, tf.float32) for v in values])
        step = tf.cast(step, tf.int64)
        if self.distributed:  # mirrored variables take assign, not scatter, in a replica
            self.rows.assign(tf.tensor_scatter_nd_update(self.rows, [[i]], [row]))
            self.steps.assign(tf.tensor_scatter_nd_update(self.steps, [[i]], [step]))
            self.count.assign(self.count + 1)
        else:
            self.rows.scatter_nd_update([[i]], [row])
            self.steps.scatter_nd_update([[i]], [step])
            self.count.assign_add(1)

    def drain(self):
        """Return ``(steps, rows, lost)`` recorded since the last drain and reset the log."""
        n = int(self.count.numpy())
        kept = min(n, self.capacity)
        steps, rows = self.steps.numpy(), self.rows.numpy()
        if n > self.capacity:  # wrapped: oldest rows were overwritten
            start = n % self.capacity
            order = list(range(start, self.capacity)) + list(range(start))
            steps, rows = steps[order], rows[order]
        self.count.assign(0)
        return steps[:kept], rows[:kept], n - kept


RATIO_KEY = "lrbs_ratio"


def split_step_ratio(data):
    """``(data, ratio)``: a dataset element without its per-step η/S, and that η/S (or None).

    The η/S of a step rides as a third item, either a scalar or ``{RATIO_KEY: vector}`` with one
    copy per example (the form a ``tf.distribute`` strategy can split across replicas).
    """
    if isinstance(data, tuple) and len(data) == 3:
        extra = data[2]
        if isinstance(extra, dict) and set(extra) == {RATIO_KEY}:
            return data[:2], extra[RATIO_KEY]
        if getattr(getattr(extra, "shape", None), "rank", None) == 0:
            return data[:2], extra
    return data, None
