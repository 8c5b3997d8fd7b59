"""A run's TensorBoard files (``tb/``): one writer per split (``train``, ``validation``, ``test``,
and ``probe`` with probes), every train step's loss, η, S and η/S (:class:`StepScalars`), every
epoch's metrics (:meth:`RunBoard.epoch`), the probes (:meth:`RunBoard.probe`), the marks of what
is already written (``tb/written.json``, so a replay after a kill writes nothing twice), and
reading them back (:func:`read_scalars`)."""

from __future__ import annotations

import glob
import logging
import math
import os

import keras
import tensorflow as tf
from tensorboard.plugins.scalar import metadata as scalar_metadata

from lrbs_tf import files
from lrbs_tf.probes.callbacks import LIMIT_RUN, write_layout, write_scalars
from lrbs_tf.training import signals
from lrbs_tf.training.folder import event_file_sizes
from lrbs_tf.training.results import EpochRecord

SPLITS = ("train", "validation", "test")


class RunBoard:
    """The TensorBoard files of the run folder ``run_dir``: writers, marks and the per-step
    writer of ``step_log`` (a :class:`~lrbs_tf.core.steplog.StepLog`)."""

    def __init__(self, run_dir: str, step_log, probes: bool = False):
        tb = os.path.join(run_dir, "tb")
        splits = SPLITS + (("probe", "probe" + LIMIT_RUN) if probes else ())
        self.writers = {s: tf.summary.create_file_writer(os.path.join(tb, s)) for s in splits}
        self.marks = WrittenMarks(os.path.join(tb, "written.json"))
        self.step_scalars = StepScalars(self.writers["train"], step_log, self.marks)
        if probes:
            write_layout(self.writers["probe"])

    def epoch(self, record) -> None:
        """An epoch's record (:class:`~lrbs_tf.training.results.EpochRecord`), once."""
        epoch_summaries(self.writers, record, self.marks)

    def probe(self, measured: dict, epoch: int) -> None:
        """A probe after ``epoch`` (1-based): one point per tag and epoch."""
        if epoch > self.marks.get("probe"):
            limit = self.writers["probe" + LIMIT_RUN]
            write_scalars(self.writers["probe"], measured, self.marks.epoch_step(epoch), limit)
            self.marks.set("probe", epoch)

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()


class WrittenMarks:
    """The last step and epoch already written to a run's TensorBoard files (``tb/written.json``),
    and the size of every event file when they were marked (``files``).

    A run killed after writing summaries but before its next checkpoint replays those steps
    when resumed; the marks make the replay skip what is already on disk, so every step and
    epoch appears once (the replayed values are identical in ``--deterministic`` mode). The
    sizes let a resumed run check that what the marks say is on disk still is
    (:func:`lrbs_tf.training.folder.damaged_event_file`): an event file cut short would
    otherwise lose points silently.
    Every mark is set after its writer was flushed.
    """

    def __init__(self, path: str):
        self.path = path
        self.marks = files.read_json(path) if os.path.lexists(path) else {}
        # epochs are drawn at Keras' epoch index (0 = the first); runs begun before lrbs_tf
        # did so drew them from 1 and go on that way
        self.marks.setdefault("epoch_step_of_first", 1 if self.marks else 0)

    def epoch_step(self, epoch: int) -> int:
        """The TensorBoard step of (1-based) ``epoch``."""
        return epoch - 1 + self.get("epoch_step_of_first")

    def get(self, key: str) -> int:
        return int(self.marks.get(key, 0))

    def set(self, key: str, value: int) -> None:
        self.marks[key] = int(value)
        self.marks["files"] = event_file_sizes(os.path.dirname(self.path))
        files.write_json(self.path, self.marks)


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


def epoch_summaries(writers: dict, record: EpochRecord, marks) -> None:
    """``epoch_loss``/``epoch_accuracy`` per split (and the training set's loss and accuracy at
    the weights, ``epoch_loss_at_weights``) at Keras' epoch index (:meth:`WrittenMarks.epoch_step`),
    unless a replay after a kill already wrote them."""
    if record.epoch <= marks.get("epoch"):
        return
    values, step = record.to_dict(), marks.epoch_step(record.epoch)
    for split in ("train", "validation", "test"):
        with writers[split].as_default(step=step), tf.summary.record_if(True):
            for metric in ("loss", "accuracy"):
                value = values.get(f"{split}_{metric}")
                if value is not None and math.isfinite(value):
                    tf.summary.scalar(f"epoch_{metric}", value)
                if split == "train" and values.get(f"weights_{metric}") is not None:
                    tf.summary.scalar(f"epoch_{metric}_at_weights", values[f"weights_{metric}"])
        writers[split].flush()
    marks.set("epoch", record.epoch)


def read_scalars(logdir: str) -> dict[str, list[tuple[int, float]]]:
    """All scalar summaries in the event files directly inside ``logdir``: tag → [(step, value)].

    TF2 writes scalars as tensor events; hparams and other plugins' tensors are skipped.
    """
    out: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(glob.glob(os.path.join(logdir, "events.out.tfevents.*"))):
        for record in tf.data.TFRecordDataset(path):
            event = tf.compat.v1.Event.FromString(record.numpy())
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name != "scalars":
                    continue
                out.setdefault(value.tag, []).append(
                    (int(event.step), float(tf.make_ndarray(value.tensor)))
                )
    return out
