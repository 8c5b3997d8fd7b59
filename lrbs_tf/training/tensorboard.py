"""Reading TensorBoard event files back (tests, plots, tools)."""

from __future__ import annotations

import glob
import os

import tensorflow as tf


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
