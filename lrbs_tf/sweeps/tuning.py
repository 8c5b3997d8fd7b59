"""keras-tuner over η/S: a HyperModel whose trials are ordinary lrbs_tf runs.

:class:`RatioHyperModel` declares the search space — the ratio η/S on a log scale with the batch
size, or η and S directly, or an explicit η × S grid — builds the model of its base run's
``model`` (:func:`lrbs_tf.models.registry.build_for`: a registered model, your builder
``module:function`` or a ``.keras`` file), and in ``fit``
trains it with :func:`lrbs_tf.training.run.train`: the batch size goes to the tf.data pipeline
and η reaches the optimizer only through the ratio-scaled wrapper. Each trial is a run folder
named after its η and S, so a rerun of the same search reuses finished trials and resumes
killed ones; a diverged trial is recorded (objective 0) and the search goes on.

``fit`` returns the metrics keras-tuner tracks: ``val_accuracy`` (the objective, final epoch),
``test_accuracy``, ``train_loss``, ``diverged`` and, with probes, ``lambda_max``, ``trace``,
``frobenius``, ``frobenius_fd`` and ``b_simple``. Every trial also writes its TensorBoard
HParams session (η, S, η/S, model), so ``tensorboard --logdir <sweep>`` can sort and filter.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import shutil
import socket
import time

import keras_tuner as kt

from lrbs_tf import distribute, files
from lrbs_tf.models.registry import build_for
from lrbs_tf.sweeps import LR_RANGE, RATIO_RANGE
from lrbs_tf.sweeps.hparams import write_hparams_session
from lrbs_tf.training.config import RunConfig
from lrbs_tf.training.folder import RunBusyError, RunFolderError, read_json
from lrbs_tf.training.run import train
from lrbs_tf.training.signals import RunInterrupted

log = logging.getLogger(__name__)

SPACES = ("ratio", "lr_batch", "grid")
PROBE_METRICS = ("lambda_max", "trace", "frobenius", "frobenius_fd", "b_simple")


class SweepRefused(kt.errors.FatalError, RunFolderError):
    """A trial's run folder is damaged, in use, or holds something else: the sweep stops with
    the run folder's message (keras-tuner would otherwise log it and go on)."""


class SweepBusy(SweepRefused, RunBusyError):
    """A trial's run folder is in use by another process."""


class SweepPaused(kt.errors.FatalError):
    """Raised instead of starting a trial once a sweep's time budget is spent; the same
    command continues the sweep (finished runs are reused)."""


class RatioHyperModel(kt.HyperModel):
    """Search over η/S; every trial is ``train(config)`` with η and S taken from ``hp``.

    Args:
        base: the settings every trial shares (epochs, seed, data, probes, loss target…);
            its ``lr``/``batch_size`` are replaced per trial.
        space: ``"ratio"`` (η/S log-uniform in ``ratio_range``, S from ``batch_sizes``),
            ``"lr_batch"`` (η log-uniform in ``lr_range``, S from ``batch_sizes``) or
            ``"grid"`` (the ``(η, S)`` pairs of ``points``, in order, for ``kt.GridSearch``).
        on_trial_end: called with ``(config, results)`` after every trial.
        before_run: called with ``config`` before a trial that has to train (not one whose
            run folder is finished); it may raise :class:`SweepPaused` to stop the sweep.
    """

    def __init__(
        self,
        base: RunConfig,
        space: str = "ratio",
        ratio_range=RATIO_RANGE,
        lr_range=LR_RANGE,
        batch_sizes=(32, 128, 512),
        points=(),
        name_prefix: str = "trial",
        on_trial_end=None,
        before_run=None,
        progress: str = "epoch",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.on_trial_end, self.before_run = on_trial_end, before_run
        self.progress = progress  # of each trial's run: bar | epoch | none
        if space not in SPACES:
            raise ValueError(f"space must be one of {SPACES}, got {space!r}")
        if space == "grid" and not points:
            raise ValueError("a grid needs its (η, S) points")
        self.base, self.space = base, space
        self.ratio_range, self.lr_range = ratio_range, lr_range
        self.batch_sizes = list(batch_sizes)
        self.points = {point_label(lr, batch): (float(lr), int(batch)) for lr, batch in points}
        self.name_prefix = name_prefix

    def lr_and_batch(self, hp) -> tuple[float, int]:
        if self.space == "grid":
            return self.points[hp.Choice("point", list(self.points))]
        batch = hp.Choice("batch_size", self.batch_sizes)
        if self.space == "lr_batch":
            return hp.Float("lr", *self.lr_range, sampling="log"), batch
        ratio = hp.Float("ratio", *self.ratio_range, sampling="log")
        return ratio * batch, batch

    def config_for(self, hp, epochs: int | None = None) -> RunConfig:
        lr, batch = self.lr_and_batch(hp)
        name = f"{self.name_prefix}-lr{lr:.6g}-bs{batch}-seed{self.base.seed}"
        changes = dict(lr=float(lr), batch_size=int(batch), name=name)
        if epochs is not None and epochs != self.base.epochs:  # Hyperband's budgets
            changes.update(epochs=int(epochs), name=f"{name}-ep{epochs}")
        return dataclasses.replace(self.base, **changes)

    def build(self, hp):
        config = self.config_for(hp)
        if config.cpu_devices:
            distribute.split_cpu(config.cpu_devices)
        strategy = distribute.make_strategy(config.strategy, config.devices, config.peer_timeout)
        with distribute.scope(strategy):  # train() then runs the trial on all its replicas
            return build_for(config, strategy)

    def fit(self, hp, model, *args, callbacks=None, epochs=None, on_trial_end=None, **kwargs):
        """Train the trial's run on the dataset of ``base`` (the data travel through the run's
        tf.data pipeline, at the trial's S); keras-tuner's best-epoch checkpoint is written
        from the run's final weights (the objective is the final epoch's), so
        ``tuner.get_best_models()`` returns the trained models."""
        data = [a for a in args if a is not None] + [
            k for k in ("x", "y", "validation_data") if kwargs.get(k) is not None
        ]
        if data:
            raise SweepRefused(
                "RatioHyperModel trains every trial on the dataset of its RunConfig "
                f"({self.base.dataset}) through lrbs_tf's variable-batch pipeline: call "
                "tuner.search() without x, y or validation_data"
            )
        config = self.config_for(hp, epochs).validate()
        reused = finished(config)
        if self.before_run is not None and not reused:
            self.before_run(config)
        usable, checkpoints = _usable(callbacks)
        try:
            results = train(config, callbacks=usable, model=model, progress=self.progress)
        except RunInterrupted as e:  # a KeyboardInterrupt: keras-tuner lets it through
            raise RunInterrupted(
                f"interrupted in trial {config.run_name}, its state saved: run the same command "
                "to continue the sweep (finished trials are reused, this one resumes)",
                e.signum,
            ) from None
        except RunFolderError as e:
            raise (SweepBusy if isinstance(e, RunBusyError) else SweepRefused)(str(e)) from None
        if not reused:  # TensorBoard reads the first session of a run: write it once
            write_hparams_session(config)
        metrics = trial_metrics(results)
        if checkpoints and results.get("status") == "finished":
            _save_best(config, checkpoints)
        if self.on_trial_end is not None:
            self.on_trial_end(config, results)
        return metrics


def _save_best(config: RunConfig, checkpoints) -> None:
    """Write keras-tuner's checkpoint of the trial (what ``get_best_models`` loads) from the
    run's saved model (the weights the objective was measured at)."""
    from lrbs_tf.models.registry import load_model

    trained = load_model(os.path.join(config.run_dir, "model.keras"), config.model, compile=False)
    for callback in checkpoints:
        trained.save_weights(callback.filepath)


def point_label(lr: float, batch: int) -> str:
    """A grid point as keras-tuner shows it: ``"0.1/50"``."""
    return f"{float(lr):.6g}/{int(batch)}"


def finished(config: RunConfig) -> bool:
    """Is the run folder of ``config`` finished (or diverged), so that a trial only reads it?"""
    try:
        results = read_json(os.path.join(config.run_dir, "results.json"))
    except RunFolderError:
        return False
    return isinstance(results, dict) and results.get("status") in ("finished", "diverged")


def _usable(callbacks):
    """keras-tuner's callbacks split into those that work with one ``fit`` per epoch and its
    best-epoch checkpoints (written after the run, see :func:`_save_best`)."""
    keep, checkpoints = [], []
    for callback in callbacks or []:
        if type(callback).__name__ == "SaveBestEpoch":
            checkpoints.append(callback)
        else:
            keep.append(callback)
    return keep, checkpoints


def trial_metrics(results: dict) -> dict:
    """The numbers keras-tuner records for a trial (the objective is ``val_accuracy``)."""
    diverged = results.get("status") == "diverged"
    out = {
        "val_accuracy": 0.0 if diverged else float(results.get("final_validation_accuracy", 0)),
        "test_accuracy": 0.0 if diverged else float(results.get("final_test_accuracy", 0)),
        "train_loss": float(results.get("final_train_loss") or math.nan)
        if not diverged
        else math.inf,
        "diverged": 1.0 if diverged else 0.0,
        "epochs": float(len(results.get("epochs", []))),
    }
    probe = results.get("probe") or {}
    for key in PROBE_METRICS:
        if key in probe:
            out[key] = float(probe[key])
    return out


def distributed_role() -> str | None:
    """``chief``, a worker id, or None outside keras-tuner's distributed mode."""
    if "KERASTUNER_ORACLE_IP" not in os.environ:
        return None
    return os.environ.get("KERASTUNER_TUNER_ID", "chief")


def wait_for_chief(timeout: float) -> None:
    """In a worker, wait until the chief's oracle port accepts connections, or fail clearly.

    keras-tuner's own client waits for the chief up to 60 minutes without a word.
    """
    host = os.environ["KERASTUNER_ORACLE_IP"]
    port = int(os.environ["KERASTUNER_ORACLE_PORT"])
    deadline = time.time() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=2):
                return
        except OSError as e:
            if time.time() >= deadline:
                raise ConnectionError(
                    f"cannot reach the keras-tuner chief at {host}:{port} "
                    f"after {timeout:.0f} s ({e.strerror or e}); start the "
                    "chief first and check KERASTUNER_ORACLE_IP/PORT"
                ) from None
            time.sleep(0.5)


PROJECT_MARKER = ".lrbs-tuner"
# What keras-tuner writes in a project folder: the only entries we clear before a new search.
TUNER_ENTRIES = ("oracle.json",)
TUNER_PREFIXES = ("trial_", "tuner")


def claim_project(directory: str, project: str) -> None:
    """Make ``directory/project`` a keras-tuner project folder of ours, empty of keras-tuner's
    state: a new folder gets our marker (:data:`PROJECT_MARKER`); an existing one is ours only
    with that marker, and then only keras-tuner's own entries (``oracle.json``, ``tuner*``,
    ``trial_*``) are removed, links as links, anything else left alone. A folder without the
    marker is refused (:class:`SweepRefused`, nothing touched): keras-tuner's own
    ``overwrite=True`` would delete it whole."""
    path = os.path.join(directory, project)
    if os.path.lexists(path):
        if os.path.islink(path) or not os.path.isdir(path):
            raise SweepRefused(f"{path} is a link or a file, not a folder of ours: nothing changed")
        if not files.check_entry(os.path.join(path, PROJECT_MARKER)):
            raise SweepRefused(
                f"{path} exists and is not a keras-tuner folder of lrbs_tf (no {PROJECT_MARKER} "
                "marker): nothing changed; give another --logdir or move it away"
                + (
                    " (a sweep of an earlier lrbs_tf has no marker: delete its keras_tuner "
                    "folder yourself to start the search afresh; its runs are reused)"
                    if set(os.listdir(path)) and all(_tuner_entry(e) for e in os.listdir(path))
                    else ""
                )
            )
        for entry in os.listdir(path):
            if _tuner_entry(entry):
                _remove_entry(os.path.join(path, entry))
        return
    files.make_folder(directory)
    files.make_folder(path)
    files.write_text(os.path.join(path, PROJECT_MARKER), "a keras-tuner project of lrbs_tf\n")


def _tuner_entry(entry: str) -> bool:
    return entry in TUNER_ENTRIES or entry.startswith(TUNER_PREFIXES)


def _remove_entry(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)  # never follows a link inside
    else:
        files.remove(path)  # a link is removed itself


def make_tuner(
    hypermodel: RatioHyperModel,
    algorithm: str,
    directory: str,
    project: str,
    max_trials: int,
    seed: int = 0,
    max_epochs: int | None = None,
):
    """A keras-tuner tuner over ``hypermodel`` in ``directory/project``; only the chief (or a
    lone process) clears the oracle's state, in a folder of ours (:func:`claim_project`),
    workers never do. keras-tuner itself never deletes anything (``overwrite=False``)."""
    role = distributed_role()
    if role in (None, "chief"):
        claim_project(directory, project)
    # keras-tuner reads seed 0 as "no seed" (a random one): pass seed + 1, so that the same
    # command proposes the same trials and a rerun reuses or resumes their run folders.
    common = dict(
        objective=kt.Objective("val_accuracy", "max"),
        directory=directory,
        project_name=project,
        overwrite=False,
        seed=seed + 1,
    )
    if algorithm == "grid":
        return kt.GridSearch(hypermodel, max_trials=max_trials, **common)
    if algorithm == "random":
        return kt.RandomSearch(hypermodel, max_trials=max_trials, **common)
    if algorithm == "bayesian":
        return kt.BayesianOptimization(hypermodel, max_trials=max_trials, **common)
    if algorithm == "hyperband":
        return kt.Hyperband(hypermodel, max_epochs=max_epochs or hypermodel.base.epochs, **common)
    raise ValueError(f"unknown search algorithm {algorithm!r}")
