"""Keras callbacks: per-step η, S, η/S and loss in TensorBoard; a progress bar over all epochs."""

from __future__ import annotations

import logging
import os

import keras
import tensorflow as tf
from tensorboard.plugins.scalar import metadata as scalar_metadata

from lrbs_tf import distribute
from lrbs_tf.training import signals


class WrittenMarks:
    """The last step and epoch already written to a run's TensorBoard files (``tb/written.json``).

    A run killed after writing summaries but before its next checkpoint replays those steps
    when resumed; the marks make the replay skip what is already on disk, so every step and
    epoch appears once (the replayed values are identical in ``--deterministic`` mode).
    """

    def __init__(self, path: str):
        from lrbs_tf.training import runio

        self.path = path
        self.marks = runio.read_json(path) if os.path.lexists(path) else {}

    def get(self, key: str) -> int:
        return int(self.marks.get(key, 0))

    def set(self, key: str, value: int) -> None:
        from lrbs_tf.training import runio

        self.marks[key] = int(value)
        runio.write_json(self.path, self.marks)


class EpochProgbar(keras.callbacks.ProgbarLogger):
    """Keras' progress bar, numbering epochs out of the whole run when ``fit`` runs one epoch."""

    def __init__(self, total_epochs: int):
        super().__init__()
        self.total_epochs = total_epochs

    def set_params(self, params):
        super().set_params(params)
        self.epochs = self.total_epochs


class StepScalars(keras.callbacks.Callback):
    """Write the loss, η, S and η/S of every train step to a TensorBoard writer.

    The values are recorded in-graph by the model's :class:`~lrbs_tf.core.steplog.StepLog` and
    written here in bulk at the end of each epoch (and at the end of training), so per-step
    logging costs no per-step Python call. Tags: ``step/loss`` (the batch's loss),
    ``step/batch_size``, ``step/lr``, ``step/ratio`` (raw η/S) and ``step/ratio_x1e6`` (η/S in
    units of 1e-6: TensorBoard's cards round tiny numbers to 0). The x-axis is the optimizer
    step (1 = after the first update).
    """

    def __init__(self, writer, step_log, progress=None):
        super().__init__()
        self.writer = writer
        self.step_log = step_log
        self.progress = progress  # a WrittenMarks: rows already written are not written again
        # One compiled writer loop per callback: a tf.function captures the default summary
        # writer when traced, so it must not outlive this callback's writer.
        self._write_rows = tf.function(_write_rows, reduce_retracing=True)

    def on_epoch_end(self, epoch, logs=None):
        self.flush()

    def on_train_end(self, logs=None):
        self.flush()

    def flush(self):
        with signals.deferred():  # drained rows are written before a stop is let through
            self._flush()

    def _flush(self):
        steps, rows, lost = self.step_log.drain()
        if lost:
            logging.getLogger(__name__).warning(
                "step log overflowed: %d steps were not written to TensorBoard", lost
            )
        if self.progress is not None and len(steps):
            keep = steps > self.progress.get("step")
            steps, rows = steps[keep], rows[keep]
        if len(steps):
            with self.writer.as_default(), tf.summary.record_if(True):
                self._write_rows(tf.constant(steps), tf.constant(rows))
            self.writer.flush()
            if self.progress is not None:
                self.progress.set("step", int(steps.max()))


_SCALAR_METADATA = scalar_metadata.create_summary_metadata(display_name=None, description=None)
_STEP_TAGS = ("step/loss", "step/batch_size", "step/lr", "step/ratio", "step/ratio_x1e6")


def _write_rows(steps, rows):
    # tf.summary.write keeps the tags as given (tf.summary.scalar would prefix the loop's scope).
    columns = tf.concat([rows, rows[:, 3:4] * 1e6], axis=1)
    for i in tf.range(tf.shape(steps)[0]):
        for j, tag in enumerate(_STEP_TAGS):
            tf.summary.write(tag, columns[i, j], step=steps[i], metadata=_SCALAR_METADATA)


class StopAtLoss(keras.callbacks.Callback):
    """Within an epoch, every ``every`` steps, measure ``loss_at_weights()`` (a dict with
    ``loss``) and stop training when it is at most ``target``; the measurement that stopped it
    is kept in ``reached``. ``start``: batches of the epoch already done (a resumed epoch)."""

    def __init__(self, loss_at_weights, target: float, every: int, start: int = 0):
        super().__init__()
        self.loss_at_weights, self.target, self.every = loss_at_weights, target, max(1, every)
        self.start = start
        self.reached = None

    def on_epoch_begin(self, epoch, logs=None):
        self.next = self.start + self.every

    def on_train_batch_end(self, batch, logs=None):
        done = self.start + batch + 1
        if done < self.next:
            return
        self.next = done + self.every
        measured = self.loss_at_weights()
        if measured["loss"] <= self.target:
            self.reached = measured
            self.model.stop_training = True


class CheckpointEvery(keras.callbacks.Callback):
    """Call ``save()`` every ``steps`` optimizer steps inside an epoch.

    A batch-level hook makes Keras synchronise after every call of the train function; the
    training loop adds this callback only when mid-epoch checkpoints are asked for.
    """

    def __init__(self, steps: int, save):
        super().__init__()
        self.steps, self.save = steps, save
        self._last = None

    def on_train_batch_end(self, batch, logs=None):
        step = int(self.model.optimizer.iterations.numpy())
        if self._last is None or step < self._last:
            self._last = step - (step % self.steps)
        if step - self._last >= self.steps:
            self._last = step
            self.save()


class RestoreMetrics(keras.callbacks.Callback):
    """Put Keras' running metrics back to checkpointed values when an epoch is resumed."""

    def __init__(self, values):
        super().__init__()
        self.values = values

    def on_epoch_begin(self, epoch, logs=None):  # Keras resets the metrics just before this
        from lrbs_tf.training.checkpoint import restore_metrics

        restore_metrics(self.model, self.values)


class Heartbeat(keras.callbacks.Callback):
    """Tells the multi-worker watchdog (:mod:`lrbs_tf.distribute`) that steps complete."""

    def on_train_batch_end(self, batch, logs=None):
        distribute.heartbeat("training")

    def on_test_batch_end(self, batch, logs=None):
        distribute.heartbeat("evaluating")

    def on_epoch_end(self, epoch, logs=None):
        distribute.heartbeat("between epochs")
