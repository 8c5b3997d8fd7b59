"""TensorBoard's HParams dashboard for a scaling test: each branch a session (kind, rule, k, ℓ,
data order, η, S, η/S) whose metric is its loss at the weights; the experiment in ``tb/hparams``
(η, S and η/S declared as in :mod:`lrbs_tf.sweeps.hparams`)."""

from __future__ import annotations

import os

import tensorflow as tf
from tensorboard.plugins.hparams import api as hparams_api

from lrbs_tf import files
from lrbs_tf.scaling.branches import LOSS_TAG
from lrbs_tf.sweeps.hparams import HPARAMS as RUN_HPARAMS

HPARAMS = {
    "kind": hparams_api.HParam("kind", hparams_api.Discrete(["base", "rule", "svag"])),
    "rule": hparams_api.HParam("rule", display_name="rule"),
    "k": hparams_api.HParam("k", hparams_api.IntInterval(1, 10**6), display_name="k"),
    "ell": hparams_api.HParam("ell", hparams_api.IntInterval(1, 10**6), display_name="SVAG ℓ"),
    "order": hparams_api.HParam("order", hparams_api.IntInterval(0, 2**31), display_name="order"),
    **{k: RUN_HPARAMS[k] for k in ("lr", "batch_size", "ratio", "ratio_x1e6")},
}


def write_experiment(folder: str) -> None:
    """The experiment (hparams and the metric), rewritten in a folder of its own."""
    if files.check_entry(folder, folder=True):
        for name in os.listdir(folder):
            if name.startswith("events.out.tfevents."):
                files.remove(os.path.join(folder, name))
    metric = hparams_api.Metric(LOSS_TAG, display_name="loss at the weights (last point)")
    writer = tf.summary.create_file_writer(folder)
    with writer.as_default():
        hparams_api.hparams_config(hparams=list(HPARAMS.values()), metrics=[metric])
    writer.close()


def write_session(folder: str, spec) -> None:
    """One branch's session in its TensorBoard folder."""
    values = {
        "kind": spec.kind,
        "rule": spec.rule or spec.kind,
        "k": spec.k,
        "ell": spec.ell,
        "order": spec.order,
        "lr": spec.lr,
        "batch_size": spec.batch,
        "ratio": spec.ratio,
        "ratio_x1e6": spec.ratio * 1e6,
    }
    writer = tf.summary.create_file_writer(folder)
    with writer.as_default():
        hparams_api.hparams({HPARAMS[k]: v for k, v in values.items()}, trial_id=spec.name)
    writer.close()
