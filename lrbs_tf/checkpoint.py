"""Checkpoints of a run: weights + optimizer state + where in the epoch we are.

A checkpoint is ``ckpt/step-<iterations>.weights.h5`` (``model.save_weights``: layer weights,
BatchNorm statistics and every optimizer variable, including ``iterations``, the η/S wrapper's
ratio and batch size, and momentum slots) plus ``ckpt/state.json``: the name of that weights
file, the next epoch, the number of its batches already done, the values of Keras' running
metrics (so the epoch's mean loss and accuracy continue exactly) and the results recorded so
far. A new checkpoint writes a new weights file (under a temporary name, then renamed), then
replaces ``state.json`` atomically, and only then deletes the previous weights file: a kill at
any moment leaves ``state.json`` pointing at a complete weights file (whose size and SHA-1 it
records). ``tools/chaos.py`` found the earlier single-file version wanting.

Together with the stateless data order (:mod:`lrbs_tf.pipeline`) and schedules that are pure
functions of progress, this is everything a resumed run needs to continue where it stopped.
"""
from __future__ import annotations

import hashlib
import os

import keras
import numpy as np

from lrbs_tf import runio

STATE = "state.json"


def _sha1(path: str) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save(directory: str, model: keras.Model, epoch: int, batch: int, results: dict) -> None:
    """Save the model and optimizer with the position ``(epoch, batch)`` (0-based: the next
    epoch to run and how many of its batches are done)."""
    os.makedirs(directory, exist_ok=True)
    iterations = int(model.optimizer.iterations.numpy())
    name = f"step-{iterations:010d}.weights.h5"
    tmp = os.path.join(directory, "tmp-" + name)
    model.save_weights(tmp)
    final = os.path.join(directory, name)
    os.replace(tmp, final)
    runio.write_json(os.path.join(directory, STATE), {
        "epoch": epoch, "batch": batch, "iterations": iterations,
        "metrics": [[float(x) for x in np.ravel(v.numpy())] for v in model.metrics_variables],
        "results": results, "weights_file": name,
        "weights_size": os.path.getsize(final), "weights_sha1": _sha1(final),
    })
    for other in os.listdir(directory):  # older checkpoints and leftovers of killed saves
        if other.endswith(".weights.h5") and other != name:
            os.remove(os.path.join(directory, other))


def load(directory: str, model: keras.Model) -> dict | None:
    """Restore the model and optimizer; returns the saved state, or None without a checkpoint.

    Raises :class:`runio.RunFolderError` if the checkpoint is damaged.
    """
    state_path = os.path.join(directory, STATE)
    if not os.path.exists(state_path):
        return None
    state = runio.read_json(state_path)
    weights = os.path.join(directory, state.get("weights_file", "missing"))
    if (not os.path.exists(weights) or os.path.getsize(weights) != state.get("weights_size")
            or _sha1(weights) != state.get("weights_sha1")):
        raise runio.RunFolderError(f"checkpoint in {directory} is damaged (weights file does "
                                   "not match state.json); rerun with --overwrite")
    model.load_weights(weights)
    if int(model.optimizer.iterations.numpy()) != state["iterations"]:
        raise runio.RunFolderError(f"checkpoint in {directory} is inconsistent")
    return state


def restore_metrics(model: keras.Model, values) -> None:
    """Put Keras' running-metric variables back to saved values (mid-epoch resume)."""
    for variable, value in zip(model.metrics_variables, values):
        variable.assign(np.asarray(value, dtype=variable.dtype).reshape(variable.shape))
