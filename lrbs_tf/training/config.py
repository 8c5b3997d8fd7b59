"""The settings of one run, each declared once (type, default, help, flag, check), validated
without importing TensorFlow; command-line flags are generated from them
(:func:`lrbs_tf.settings.add_flags`)."""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import re

from lrbs_tf.core.plan import TrainingPlan, make_plan
from lrbs_tf.core.ratio import Ratio
from lrbs_tf.core.schedules import ScheduleError
from lrbs_tf.data import sources as data_sources
from lrbs_tf.data.splits import DataError
from lrbs_tf.distribute.cluster import STRATEGIES
from lrbs_tf.files import jsonable, restore_nonfinite
from lrbs_tf.models import sources as model_sources
from lrbs_tf.models import specs as model_specs
from lrbs_tf.probes.settings import ProbeSettings
from lrbs_tf.settings import (
    ConfigError,
    between,
    check_fields,
    names,
    optional,
    positive,
    setting,
    unit_interval,
)

MAX_EPOCHS = 100_000
NAME = re.compile(r"[A-Za-z0-9_=+-][A-Za-z0-9._=+-]*")
RUN, DATA, DEVICES = "run", "data and model", "devices (tf.distribute)"
SCHEDULES = "η/S"


def check_name(name: str) -> str:
    """A run name must be one plain path component (so a run folder is always a direct child
    of ``--logdir``); returns it or raises ValueError."""
    if not isinstance(name, str) or not NAME.fullmatch(name) or len(name) > 200:
        raise ValueError(
            f"--name must be one folder name of letters, digits and ._=+- "
            f"(not starting with a dot), got {name!r}"
        )
    return name


def _name(value):
    try:
        check_name(value)
    except ValueError as e:
        return str(e).removeprefix("--name ")
    return None


def _dataset(value):
    try:
        data_sources.kind_of(value)
    except DataError as e:
        return _named(str(e).removeprefix("--dataset "))
    return None


def _model(value):
    try:
        model_sources.kind_of(value)
    except model_sources.ModelError as e:
        return _named(str(e).removeprefix("--model "))
    return None


def _named(problem: str) -> str:
    return "names an " + problem if problem.startswith("unknown ") else problem


def _logdir(value):
    if not isinstance(value, str):
        return f"must be a folder path as a str, got a {type(value).__name__}"
    if not value.strip():
        return "must name a folder, got an empty path"
    if "\0" in value:
        return "must not contain a NUL character"
    return None


@dataclasses.dataclass
class RunConfig:
    """Every setting of one training run (recorded verbatim in ``config.json``)."""

    lr: float
    batch_size: int
    epochs: int = setting(
        3, "epochs (the cap with --loss-target)", check=between(1, MAX_EPOCHS), group=RUN
    )
    seed: int = setting(
        0,
        "fixes the split, the initial weights and the data order",
        check=between(0, 2**31 - 1),
        group=RUN,
    )
    dataset: str = setting(
        "fashion_mnist",
        "fashion_mnist; cifar10 (needs --data-dir or tensorflow-datasets); cifar10_synthetic "
        "(a generated stand-in); tfds:NAME[:CONFIG]; a folder of images in class sub-folders; "
        "an .npz with x_train, y_train[, x_test, y_test]",
        check=_dataset,
        metavar="DATA",
        group=DATA,
    )
    data_dir: str | None = setting(
        None,
        "folder with the data files (else $LRBS_DATA_DIR, "
        "/usr/share/datasets/fashion-mnist, tensorflow-datasets); "
        "used or refused",
        kind=str,
        group=DATA,
    )
    validation_size: int | None = setting(
        None,
        "held out of the training set (default: 10000 Fashion-MNIST, 5000 CIFAR-10, "
        "else 10 %% of the training examples)",
        kind=int,
        check=optional(between(1, 10**7)),
        group=DATA,
    )
    train_size: int | None = setting(
        None,
        "train on a seeded subset of this size",
        kind=int,
        check=optional(between(1, 10**7)),
        group=DATA,
    )
    model: str = setting(
        "mlp",
        "mlp, vgg11, resnet56 (or registered); module:function, a builder "
        "fn(input_shape, num_classes, **options) of yours (module or file.py); "
        "a saved model file.keras, whose weights are the start",
        check=_model,
        metavar="MODEL",
        group=DATA,
    )
    width: int | None = setting(
        None,
        "hidden width of the MLP (default 256) or of a builder taking width (default: the "
        "builder's own)",
        check=optional(between(1, 1 << 16)),
        kind=int,
        group=DATA,
    )
    momentum: float = setting(0.0, "SGD momentum (the paper: 0)", check=unit_interval, group=RUN)
    logdir: str = setting(
        "runs", "parent folder of the run folders", check=_logdir, group=RUN, identity=False
    )
    name: str | None = setting(
        None,
        "run folder name (default: from model, data, η, S, seed, and the settings that "
        "differ from their defaults: epochs, --train-size, --width …)",
        kind=str,
        check=optional(_name),
        group=RUN,
    )
    jit_compile: str = setting(
        "auto",
        "XLA: auto = on for models that gain from it (the MLP) "
        "when a run has at most 8 distinct batch sizes and no strategy",
        choices=("auto", "on", "off"),
        flag="--jit",
        group=RUN,
    )
    steps_per_execution: int | None = setting(
        None,
        "train steps per tf.function call (default: about 512 examples per call, at most 32 steps)",
        kind=int,
        check=optional(between(1, 10**6)),
        group=RUN,
    )
    eval_batch_size: int = setting(
        1000, "evaluation batch size", check=between(1, 1 << 20), cli=False
    )
    overwrite: bool = setting(
        False, "replace this run's folder (only a run folder of lrbs_tf)", group=RUN, identity=False
    )
    adopt: bool = setting(
        False,
        "take over a run folder written by an lrbs_tf before 0.2 (it has no .lrbs-run marker): "
        "marks it as lrbs_tf's and uses it",
        group=RUN,
        identity=False,
    )
    lr_schedule: str | None = setting(
        None, "η schedule, e.g. cyclic:0.001,0.005:4", kind=str, group=SCHEDULES
    )
    bs_schedule: str | None = setting(
        None, "S schedule, e.g. cyclic:640,128:4", kind=str, group=SCHEDULES
    )
    ratio_schedule: str | None = setting(
        None, "η/S schedule, e.g. milestones:1e-3@10,20", kind=str, group=SCHEDULES
    )
    keep_ratio: bool = setting(
        False, "with --bs-schedule: η follows S so that η/S stays η0/S0", group=SCHEDULES
    )
    grow_batch: bool = setting(
        False, "with --lr-schedule: grow S instead of decaying η (same η/S)", group=SCHEDULES
    )
    probe: ProbeSettings | None = None  # curvature and noise at the end of training
    probe_every: int = setting(
        0,
        "also probe every K epochs during training (TensorBoard probe/*)",
        check=between(0, MAX_EPOCHS),
        metavar="K",
        group="curvature probes (λ_max, Tr H, ‖H‖_F, B_simple)",
    )
    deterministic: bool = setting(
        False,
        "TensorFlow op determinism: bitwise-repeatable and resumable runs; turns XLA off",
        group=RUN,
    )
    checkpoint_steps: int = setting(
        0,
        "also checkpoint every K steps inside an epoch (default: epoch ends)",
        check=between(0, 10**9),
        metavar="K",
        group=RUN,
    )
    keep_epochs: int = setting(
        0,
        "also keep the model after every K epochs as snapshots/epoch-NNNN.keras, to branch "
        "from with lrbs-scale --from RUN --epoch E (default: the final model only)",
        check=between(0, MAX_EPOCHS),
        metavar="K",
        group=RUN,
        identity=False,
    )
    resume: bool = setting(
        False,
        "insist on resuming (the same command resumes a stopped run anyway)",
        group=RUN,
        identity=False,
    )
    loss_target: float | None = setting(
        None,
        "stop once the loss over the training set at the weights is at most this",
        kind=float,
        check=optional(positive),
        group=RUN,
    )
    augment: bool = setting(False, "4-pixel shifts and horizontal flips (CIFAR-10)", group=DATA)
    # Where it runs: not part of the run's identity (a run may be resumed on other hardware).
    strategy: str = setting(
        "auto",
        "auto: MirroredStrategy when more than one GPU is visible, "
        "else none; multiworker: MultiWorkerMirroredStrategy from TF_CONFIG "
        "(see tools/launch_workers.py)",
        choices=STRATEGIES,
        group=DEVICES,
        identity=False,
    )
    devices: str | None = setting(
        None,
        "devices for MirroredStrategy, e.g. /gpu:0,/gpu:1 "
        "(default: all GPUs, else all logical CPUs)",
        kind=str,
        group=DEVICES,
        identity=False,
    )
    cpu_devices: int = setting(
        0,
        "split the CPU into N logical devices (try multi-device code without GPUs)",
        check=between(0, 256),
        metavar="N",
        group=DEVICES,
        identity=False,
    )
    peer_timeout: float = setting(
        300.0,
        "multiworker: give up after this many seconds without progress (a dead peer)",
        check=positive,
        metavar="SECONDS",
        group=DEVICES,
        identity=False,
    )

    def plan(self) -> TrainingPlan:
        """η, S and η/S over training (constant η/S when no schedule is given)."""
        try:
            return make_plan(
                self.lr,
                self.batch_size,
                self.lr_schedule,
                self.bs_schedule,
                self.ratio_schedule,
                self.keep_ratio,
                self.grow_batch,
            )
        except ScheduleError as e:
            raise ConfigError(str(e)) from None

    @property
    def ratio(self) -> float:
        return self.lr / self.batch_size

    def data_source(self) -> data_sources.Source:
        """What ``dataset`` names (:mod:`lrbs_tf.data.sources`); raises ConfigError."""
        try:
            return data_sources.describe(self.dataset, self.data_dir)
        except DataError as e:
            raise ConfigError(str(e)) from None

    def model_source(self) -> model_sources.ModelSource:
        """What ``model`` names (:mod:`lrbs_tf.models.sources`); raises ModelError."""
        return model_sources.describe(self.model)

    @property
    def val_size(self) -> int:
        if self.validation_size is not None:
            return self.validation_size
        return self.data_source().validation

    @property
    def num_train(self) -> int:
        if self.train_size is not None:
            return self.train_size
        return self.data_source().train_pool - self.val_size

    @property
    def run_name(self) -> str:
        """``--name``, else the default name: model, data, η, S, seed, a digest of the
        schedules, and every setting of :data:`NAME_PARTS` that differs from its default (so
        runs differing there get their own folders). A folder made by an lrbs_tf that named
        runs without those parts (:meth:`legacy_name`) is still found: when the new name's
        folder does not exist and the old name's holds this very run, the old name is kept."""
        if self.name:
            return self.name
        legacy = self.legacy_name()
        parts = "".join(
            _name_part(abbr, getattr(self, key))
            for key, abbr in NAME_PARTS
            if getattr(self, key) != _DEFAULTS[key]
        )
        if parts and self._holds_this_run(legacy, legacy + parts):
            return legacy
        return legacy + parts

    def legacy_name(self) -> str:
        """The default name as lrbs_tf 0.2.0 made it: model, data, η, S, seed, schedules."""
        labels = f"{self.model_source().label}-{self.data_source().label}"
        name = f"{labels}-lr{self.lr:g}-bs{self.batch_size}-seed{self.seed}"
        schedules = self.plan().describe()
        if schedules != {
            "batch_schedule": f"const:{self.batch_size:g}",
            "lr_schedule": f"const:{self.lr:g}",
        }:
            digest = hashlib.sha1(repr(sorted(schedules.items())).encode()).hexdigest()[:6]
            name += f"-sched{digest}"
        return name

    def _holds_this_run(self, legacy: str, name: str) -> bool:
        """Does ``logdir/legacy`` hold this run, saved under its old default name, while
        ``logdir/name`` does not exist?"""
        from lrbs_tf import files

        if os.path.lexists(os.path.join(self.logdir, name)):
            return False
        path = os.path.join(self.logdir, legacy, "config.json")
        try:
            saved = files.read_json(path)["config"]
            if saved["name"] is not None or saved["run_name"] != legacy:
                return False
        except (OSError, ValueError, KeyError, TypeError, files.FileProblem):
            return False
        as_named = dataclasses.replace(self, name=legacy)
        return all(key == "name" for key, _, _ in differences(saved, as_named))

    @property
    def run_dir(self) -> str:
        return os.path.join(self.logdir, self.run_name)

    def validate(self) -> RunConfig:
        """Every field's own check (see its declaration), then what depends on several."""
        Ratio(self.lr, self.batch_size)
        check_fields(self)
        pool = self.data_source().train_pool
        self._check_model_settings()
        if not 0 < self.val_size < pool:
            raise ConfigError(
                f"--validation-size must be between 1 and {pool - 1}, got {self.val_size}"
            )
        if self.train_size is not None and not self.train_size <= pool - self.val_size:
            raise ConfigError(
                f"--train-size must be between 1 and {pool - self.val_size} "
                f"(after holding out {self.val_size} for validation), "
                f"got {self.train_size}"
            )
        if self.batch_size > self.num_train:
            raise ConfigError(
                f"batch size {self.batch_size} is larger than the training set "
                f"({self.num_train} examples)"
            )
        try:
            self.plan().check(self.epochs, self.num_train)
        except ScheduleError as e:
            raise ConfigError(str(e)) from None
        if self.probe_every and self.probe is None:
            raise ConfigError("--probe-every needs probe settings (--probe)")
        if self.probe is not None:
            self.probe.validate(self.num_train)
        try:
            data_sources.check_memory(self.data_source(), self.num_train, self.val_size)
        except data_sources.DataError as e:
            raise ConfigError(str(e)) from None
        if self.data_dir is not None and self.data_source().kind == "registered":
            from lrbs_tf.data.fashion_mnist import check_data_dir

            try:
                check_data_dir(self.dataset, self.data_dir)
            except DataError as e:
                raise ConfigError(str(e)) from None
        return self

    def _check_model_settings(self) -> None:
        source = self.model_source()
        if self.width is not None and "width" not in source.settings:
            raise ConfigError(
                f"--width applies to models that take it (mlp, or a builder with a width "
                f"parameter); {self.model} does not"
            )

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        if self.model in model_specs.MODELS:  # a registered model's defaults, as it uses them
            out |= {
                k: v for k, v in model_specs.MODELS[self.model].defaults.items() if out[k] is None
            }
        out.update(
            ratio=self.ratio,
            num_train=self.num_train,
            run_name=self.run_name,
            validation_size=self.val_size,
            schedules=self.plan().describe(),
        )
        if self.model_source().kind != "registered":
            out["model_source"] = self.model_source().record()
        if self.data_source().kind != "registered":
            out["data_source"] = self.data_source().record()
        return out


# Settings the default run name shows, as ``-<abbreviation><value>``, when they differ from
# their defaults (``-ep5-n1000-w16``); today's defaults give the names lrbs_tf 0.2.0 gave.
NAME_PARTS = (
    ("epochs", "ep"),
    ("train_size", "n"),
    ("validation_size", "val"),
    ("width", "w"),
    ("momentum", "mom"),
    ("loss_target", "target"),
    ("augment", "aug"),
    ("deterministic", "det"),
    ("jit_compile", "jit"),
    ("steps_per_execution", "spe"),
)
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(RunConfig)}


def _name_part(abbreviation: str, value) -> str:
    if isinstance(value, bool):
        return f"-{abbreviation}"
    return f"-{abbreviation}{value:g}" if isinstance(value, float) else f"-{abbreviation}{value}"


PLACEMENT = names(RunConfig, group=DEVICES)  # where a run runs: strategy, devices, workers
NOT_IDENTITY = names(RunConfig, identity=False)  # + the folder and how to treat it
PROBE_NOT_IDENTITY = names(ProbeSettings, identity=False)
SOURCES = ("model_source", "data_source")  # checked by their digests (training/folder.py)


def changed_sources(saved: dict, config: RunConfig) -> str | None:
    """What changed since a run recorded ``saved`` (its config): the builder's source file or
    the model file (their sha256), in one sentence; None when nothing did."""
    before = saved.get("model_source") or {}
    now = config.to_dict().get("model_source") or {}
    if before.get("sha256") and now.get("sha256") and before["sha256"] != now["sha256"]:
        what = "the model file" if now.get("kind") == "file" else "the builder's source file"
        return (
            f"{what} {now['path']} changed since the run started (sha256 "
            f"{before['sha256'][:12]}… then, {now['sha256'][:12]}… now)"
        )
    return None


def same_settings(saved: dict, config: RunConfig) -> bool:
    """Does a saved ``config.json`` (its ``config``) describe the run of ``config``? Settings
    outside the run's identity (:data:`NOT_IDENTITY`) are not compared; settings added to
    RunConfig (or to its probe settings) after the run was saved count as equal when they hold
    their default value, so a newer lrbs_tf reuses the runs of an older one."""
    return not differences(saved, config)


def differences(saved: dict, config: RunConfig) -> list[tuple[str, object, object]]:
    """The settings in which a saved ``config.json`` (its ``config``) and ``config`` differ,
    as ``(name, then, now)`` (nested probe settings as ``probe.examples``), compared as
    :func:`same_settings` does."""
    as_read = restore_nonfinite(jsonable(config.to_dict()))  # as read back from config.json
    now = {k: v for k, v in as_read.items() if k not in NOT_IDENTITY + SOURCES}
    if isinstance(now.get("probe"), dict):  # how long to probe is not what the run is
        now["probe"] = {k: v for k, v in now["probe"].items() if k not in PROBE_NOT_IDENTITY}
    default = RunConfig(lr=1.0, batch_size=1, probe=ProbeSettings())
    defaults = restore_nonfinite(jsonable(dataclasses.asdict(default)))
    return _differences(saved, now, defaults, "")


def _differences(saved: dict, now: dict, defaults: dict, prefix: str) -> list:
    out = []
    for key, value in now.items():
        if key not in saved:
            if key not in defaults or defaults[key] != value:
                out.append((prefix + key, defaults.get(key, "not recorded"), value))
        elif isinstance(value, dict) and isinstance(saved[key], dict):
            out += _differences(saved[key], value, defaults.get(key) or {}, f"{prefix}{key}.")
        elif saved[key] != value and not _both_nan(saved[key], value):
            out.append((prefix + key, saved[key], value))
    return out


DERIVED = ("ratio", "num_train", "run_name", "schedules")  # follow from the settings


def describe_differences(found: list[tuple[str, object, object]]) -> str:
    """``--epochs 3 then, 5 now; --probe off then, on now``: the settings that differ (what
    follows from them, like η/S, only when nothing else shows the difference)."""
    shown = [d for d in found if d[0] not in DERIVED] or found
    parts = []
    for name, then, now in shown:
        flag = "--" + name.replace("probe.", "probe-").replace("_", "-")
        if name == "probe" and (then is None or now is None):
            then, now = ("off" if then is None else "on"), ("off" if now is None else "on")
        parts.append(f"{flag} {_shown(then)} then, {_shown(now)} now")
    return "; ".join(parts)


def _shown(value) -> str:
    if isinstance(value, dict):
        return "{…}"
    return "unset" if value is None else str(value)


def _both_nan(a, b) -> bool:
    return isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)


__all__ = [
    "RunConfig",
    "ProbeSettings",
    "ConfigError",
    "MAX_EPOCHS",
    "same_settings",
    "differences",
]
