"""Checkpoints of a run: weights + optimizer state + where in the epoch we are.

A checkpoint is ``ckpt/step-<iterations>.weights.npz`` — every model weight (BatchNorm
statistics included) and every optimizer variable (``iterations``, the η/S wrapper's ratio and
batch size, momentum slots), in order, as a NumPy archive built in memory and written
atomically — plus ``ckpt/state.json``: the name, size and SHA-1 of that file, the next epoch,
the number of its batches already done, the values of Keras' running metrics (so the epoch's
mean loss and accuracy continue exactly), whether all the epoch's steps are done (``trained``:
a stop while the epoch was being evaluated) and the results recorded so far. A new checkpoint
writes a new weights file, then replaces ``state.json`` atomically, and only then deletes the
previous weights file: a kill at any moment leaves ``state.json`` pointing at a complete file.
Nothing is written through HDF5 on the run's disk: h5py crashed the process (SIGSEGV) when
the disk filled up, while a plain write fails with a clean ``OSError``.

Together with the stateless data order (:mod:`lrbs_tf.data.pipeline`) and schedules that are pure
functions of progress, this is everything a resumed run needs to continue where it stopped.
"""

from __future__ import annotations

import io
import os

import keras
import numpy as np

from lrbs_tf import files
from lrbs_tf.training.folder import RunFolderError, read_json, sha1_of

STATE = "state.json"


def _variables(model: keras.Model) -> list:
    return list(model.weights) + list(model.optimizer.variables)


def metric_values(model: keras.Model) -> list:
    """Keras' running-metric variables of ``model`` (totals and counts), as lists of floats."""
    return [[float(x) for x in np.ravel(v.numpy())] for v in model.metrics_variables]


def save(
    directory: str,
    model: keras.Model,
    epoch: int,
    batch: int,
    results: dict,
    metrics: list | None = None,
    trained: bool = False,
) -> None:
    """Save the model and optimizer with the position ``(epoch, batch)`` (0-based: the next
    epoch to run and how many of its batches are done). ``metrics``: Keras' running-metric
    values to resume the epoch's means from (default: as they are now); ``trained``: the
    epoch's steps are all done (it stopped at the loss target, or while it was evaluated)."""
    files.make_folder(directory)  # a link in place of ckpt/ is refused
    iterations = int(model.optimizer.iterations.numpy())
    name = f"step-{iterations:010d}.weights.npz"
    buffer = io.BytesIO()
    np.savez(buffer, *[np.asarray(v.numpy()) for v in _variables(model)])
    final = os.path.join(directory, name)
    files.write_bytes(final, buffer.getvalue())
    files.write_json(
        os.path.join(directory, STATE),
        {
            "epoch": epoch,
            "batch": batch,
            "iterations": iterations,
            "metrics": metric_values(model) if metrics is None else metrics,
            "trained": bool(trained),
            "results": results,
            "weights_file": name,
            "weights_size": os.path.getsize(final),
            "weights_sha1": sha1_of(final),
        },
    )
    folder = files.open_folder(directory)  # removes inside this folder only, never via a link
    try:
        for other in os.listdir(folder):  # older checkpoints and leftovers of killed saves
            if other.startswith("step-") and other != name:
                os.unlink(other, dir_fd=folder)
    finally:
        os.close(folder)


def load(directory: str, model: keras.Model) -> dict | None:
    """Restore the model and optimizer; returns the saved state, or None without a checkpoint.

    Raises :class:`RunFolderError` if the checkpoint is damaged.
    """
    state_path = os.path.join(directory, STATE)
    if not os.path.lexists(state_path):
        return None
    state = read_json(state_path)
    weights = os.path.join(directory, state.get("weights_file", "missing"))
    if (
        not files.check_entry(weights)
        or os.path.getsize(weights) != state.get("weights_size")
        or sha1_of(weights) != state.get("weights_sha1")
    ):
        raise RunFolderError(
            f"checkpoint in {directory} is damaged (weights file does "
            "not match state.json); rerun with --overwrite"
        )
    if weights.endswith(".h5"):  # written by lrbs_tf 0.1 with model.save_weights
        model.load_weights(weights)
    else:
        variables = _variables(model)
        with np.load(io.BytesIO(files.read_bytes(weights))) as archive:
            values = [archive[f"arr_{i}"] for i in range(len(archive.files))]
        if len(values) != len(variables) or any(
            tuple(v.shape) != a.shape for v, a in zip(variables, values)
        ):
            raise RunFolderError(
                f"checkpoint in {directory} does not fit this model "
                f"({len(values)} arrays for {len(variables)} "
                "variables); rerun with --overwrite"
            )
        for variable, value in zip(variables, values):
            variable.assign(value)
    if int(model.optimizer.iterations.numpy()) != state["iterations"]:
        raise RunFolderError(f"checkpoint in {directory} is inconsistent")
    return state


def restore_metrics(model: keras.Model, values) -> None:
    """Put Keras' running-metric variables back to saved values (mid-epoch resume)."""
    for variable, value in zip(model.metrics_variables, values):
        variable.assign(np.asarray(value, dtype=variable.dtype).reshape(variable.shape))
