"""TensorBoard's HParams dashboard for sweeps: the experiment (η, S, η/S and model as hparams;
accuracy, the loss at the weights and curvature as metrics) and one session per run."""

from __future__ import annotations

import os

import tensorflow as tf
from tensorboard.plugins.hparams import api as hparams_api

from lrbs_tf import files
from lrbs_tf.training.config import RunConfig

HPARAMS = {
    "lr": hparams_api.HParam("lr", hparams_api.RealInterval(1e-6, 10.0), display_name="η"),
    "batch_size": hparams_api.HParam(
        "batch_size", hparams_api.IntInterval(1, 100000), display_name="S"
    ),
    "ratio": hparams_api.HParam("ratio", hparams_api.RealInterval(1e-9, 1.0), display_name="η/S"),
    # TensorBoard shows hparams with a fixed number of decimals: η/S = 7.8e-6 reads 0.0000078
    "ratio_x1e6": hparams_api.HParam(
        "ratio_x1e6", hparams_api.RealInterval(1e-3, 1e6), display_name="η/S × 1e6"
    ),
    "model": hparams_api.HParam("model", display_name="model"),  # any --model, as given
}


def write_hparams_config(logdir: str) -> None:
    """The sweep's HParams experiment: η, S, η/S and model as hparams; accuracy, the loss at
    the weights and curvature as metrics (TensorBoard's HParams dashboard)."""
    metrics = [
        hparams_api.Metric("epoch_accuracy", group="validation", display_name="val accuracy"),
        hparams_api.Metric("epoch_accuracy", group="test", display_name="test accuracy"),
        hparams_api.Metric("epoch_loss", group="train", display_name="train loss (running)"),
        hparams_api.Metric(
            "epoch_loss_at_weights", group="train", display_name="train loss at weights"
        ),
        hparams_api.Metric("probe/width_sharpness", group="probe", display_name="width sharpness"),
        hparams_api.Metric("probe/step_sharpness", group="probe", display_name="step sharpness"),
        hparams_api.Metric("probe/trace", group="probe", display_name="Tr H"),
        hparams_api.Metric("probe/frobenius", group="probe", display_name="‖H‖_F"),
        hparams_api.Metric("probe/b_simple", group="probe", display_name="B_simple"),
    ]
    # In a folder of its own, rewritten each time: TensorBoard shows the first experiment
    # summary it finds, so an older one (other columns) must not stay beside it.
    folder = os.path.join(logdir, "hparams")
    if files.check_entry(folder, folder=True):  # a link in its place is refused
        for name in os.listdir(folder):
            if name.startswith("events.out.tfevents."):
                files.remove(os.path.join(folder, name))
    writer = tf.summary.create_file_writer(folder)
    with writer.as_default():
        hparams_api.hparams_config(hparams=list(HPARAMS.values()), metrics=metrics)
    writer.close()


def write_hparams_session(config: RunConfig) -> None:
    """Record a run's hparams in its TensorBoard folder (one HParams session per run)."""
    values = {
        HPARAMS["lr"]: config.lr,
        HPARAMS["batch_size"]: config.batch_size,
        HPARAMS["ratio"]: config.ratio,
        HPARAMS["ratio_x1e6"]: config.ratio * 1e6,
        HPARAMS["model"]: config.model,
    }
    writer = tf.summary.create_file_writer(os.path.join(config.run_dir, "tb"))
    with writer.as_default():
        hparams_api.hparams(values, trial_id=config.run_name)
    writer.close()
