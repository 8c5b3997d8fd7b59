"""Where a scaling test starts, θ0: a finished run folder at its last epoch, a saved ``.keras``
model, a fresh initialisation, or a warm-up run trained first. :func:`describe_start` checks
the choice without TensorFlow (before anything is written); :func:`load_start` loads θ0 and the
training data.

A run folder is data, never code: its model is loaded in one place, :func:`load_run_model`.
A finished run keeps its final model (``model.keras``; its checkpoints are removed when it
finishes) and, with ``lrbs-run --keep-epochs K``, the model after every K epochs
(``snapshots/``): those are the epochs it can branch from (by default its last).
"""

from __future__ import annotations

import dataclasses
import os

from lrbs_tf.settings import ConfigError
from lrbs_tf.training.config import RunConfig
from lrbs_tf.training.folder import RunFolderError, shaped, snapshot_epochs, snapshot_name

KINDS = ("run", "file", "init", "warmup")


@dataclasses.dataclass
class Start:
    """θ0's source: ``kind`` (:data:`KINDS`), ``spec`` (the folder, file, ``init`` or the
    warm-up's η/S:epochs), ``epoch`` (of a run), the run settings its data and model come from
    (``config``, as in ``config.json``), a ``label`` for people, the base η/S and momentum it
    suggests, N, and the warm-up's RunConfig."""

    kind: str
    spec: str
    epoch: int | None
    config: dict
    label: str
    base: str
    momentum: float
    num_train: int
    warmup: RunConfig | None = None
    file: str | None = None  # the model file of a run folder's epoch
    trust_code: bool = False  # import a run folder's builder without its digest (--trust-code)

    def identity(self) -> dict:
        keep = ("model", "width", "dataset", "train_size", "validation_size", "seed")
        path = os.path.abspath(self.spec) if self.kind in ("run", "file") else self.spec
        return dict(
            kind=self.kind,
            spec=path,
            epoch=self.epoch,
            config={k: self.config.get(k) for k in keep},
        )


def describe_start(
    source: str | None, epoch: int | None, warmup: tuple | None, run_settings: dict, logdir: str
) -> Start:
    """The start of ``--from SOURCE [--epoch E]`` or ``--warmup (η, S, epochs)``; ConfigError
    (one line) when there is none to start from."""
    if source is not None and warmup is not None:
        raise ConfigError("give --from or --warmup, not both")
    if epoch is not None and (source is None or not os.path.isdir(source)):
        raise ConfigError("--epoch chooses the epoch of a run folder given with --from")
    if warmup is not None:
        return _warmup(warmup, run_settings, logdir)
    if source is None or source == "init":
        config = RunConfig(lr=0.1, batch_size=1, **run_settings).validate()
        label = f"the initialisation of {config.model} (seed {config.seed})"
        return _from_config("init", "init", config, label)
    if os.path.isdir(source):
        return _run(source, epoch)
    if source.endswith(".keras"):
        if not os.path.isfile(source):
            raise ConfigError(f"--from {source}: no such model file")
        config = RunConfig(lr=0.1, batch_size=1, **dict(run_settings, model=source)).validate()
        return _from_config("file", source, config, f"the saved model {source}")
    raise ConfigError(
        f"--from takes a run folder, a .keras model file or 'init', got {source!r} "
        f"({'no such folder' if not os.path.exists(source) else 'not a folder'})"
    )


def _from_config(kind, spec, config: RunConfig, label: str) -> Start:
    return Start(kind, spec, None, config.to_dict(), label, "0.1/50", 0.0, config.num_train)


def _warmup(warmup: tuple, run_settings: dict, logdir: str) -> Start:
    lr, batch, epochs = warmup
    config = RunConfig(lr=lr, batch_size=batch, epochs=epochs, logdir=logdir, **run_settings)
    config.name = f"warmup-{config.run_name}-e{epochs}"
    config.validate()
    label = f"{epochs} epoch(s) at {lr:g}/{batch} ({config.run_name})"
    return Start(
        "warmup",
        config.run_dir,
        epochs,
        config.to_dict(),
        label,
        f"{lr:g}/{batch}",
        0.0,
        config.num_train,
        warmup=config,
    )


def _run(run_dir: str, epoch: int | None) -> Start:
    """A run folder at a kept epoch: its final model once finished, or a snapshot
    (``lrbs-run --keep-epochs K``)."""
    try:
        saved = shaped(os.path.join(run_dir, "config.json"), "config")
        results = shaped(os.path.join(run_dir, "results.json"), "results")
    except RunFolderError as e:
        raise ConfigError(f"--from {run_dir} is not a run folder lrbs_tf can read ({e})") from None
    kept = {e: snapshot_file(run_dir, e) for e in snapshot_epochs(run_dir)}
    if results["status"] == "finished":
        if not os.path.isfile(os.path.join(run_dir, "model.keras")):
            raise ConfigError(f"--from {run_dir}: the run is finished but model.keras is missing")
        kept[len(results["epochs"])] = os.path.join(run_dir, "model.keras")
    if not kept:
        raise ConfigError(
            f"--from {run_dir}: the run is {results['status']!r} and has no checkpoint to branch "
            "from (a run keeps its model once it finishes, and every K epochs with --keep-epochs "
            "K): finish it first — the same lrbs-run command resumes it"
        )
    epoch = max(kept) if epoch is None else epoch
    if epoch not in kept:
        raise ConfigError(
            f"--from {run_dir} has no checkpoint at epoch {epoch} (it keeps epoch(s) "
            f"{', '.join(map(str, sorted(kept)))}; lrbs-run --keep-epochs K keeps every K-th)"
        )
    config = saved["config"]
    label = f"{os.path.basename(os.path.normpath(run_dir))} at epoch {epoch}"
    base = f"{config['lr']:g}/{config['batch_size']}"
    momentum = float(config.get("momentum") or 0.0)
    start = Start("run", run_dir, epoch, config, label, base, momentum, int(config["num_train"]))
    start.file = kept[epoch]
    return start


def snapshot_file(run_dir: str, epoch: int) -> str:
    return os.path.join(run_dir, "snapshots", snapshot_name(epoch))


def load_start(start: Start, say=lambda line: None, progress: str = "epoch"):
    """``(θ0 as a Keras model, the data)``; a warm-up run is trained (or reused) first."""
    from lrbs_tf.data.datasets import load_for
    from lrbs_tf.models.registry import build_for

    if start.kind == "warmup":
        from lrbs_tf.training.run import train

        say(f"warm-up run: {start.label} → θ0")
        results = train(start.warmup, progress=progress)
        if results["status"] != "finished":
            raise RunFolderError(f"the warm-up run {start.spec} {results['status']}: no θ0")
    if start.kind in ("run", "warmup"):
        path = start.file or os.path.join(start.spec, "model.keras")
        return load_run_model(path, start.config, start.trust_code), load_for(start.config)
    config = RunConfig(
        **{
            k: start.config[k]
            for k in (
                "lr",
                "batch_size",
                "model",
                "width",
                "dataset",
                "data_dir",
                "train_size",
                "validation_size",
                "seed",
            )
        }
    )
    return build_for(config), load_for(start.config)


def load_run_model(path: str, config: dict, trust_code: bool = False):
    """θ0 from a run folder: its ``model.keras`` or a snapshot (``path``), loaded as the run's
    ``--model`` by :func:`lrbs_tf.models.registry.load_run_model` — a run folder is data,
    never code: its builder is imported only if Keras needs it and its digest matches."""
    from lrbs_tf.models.registry import load_run_model as load

    folder = os.path.dirname(path)
    if os.path.basename(folder) == "snapshots":
        folder = os.path.dirname(folder)
    return load(folder, config, trust_code=trust_code, file=path, compile=False)
