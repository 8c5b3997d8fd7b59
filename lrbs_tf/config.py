"""The configuration of one run, validated without importing TensorFlow."""
from __future__ import annotations

import dataclasses
import hashlib
import math
import os

from lrbs_tf.distribute import STRATEGIES
from lrbs_tf.plan import TrainingPlan, make_plan
from lrbs_tf.ratio import Ratio, RatioError, parse_ratio, rescale_lr, resolve_ratio
from lrbs_tf.runfolder import check_name
from lrbs_tf.schedules import ScheduleError, parse_schedule

# Examples available for training + validation, per dataset (the rest is the test set), and
# the validation split held out of them by default.
TRAIN_POOL = {"fashion_mnist": 60000, "cifar10": 50000, "cifar10_synthetic": 6000}
DEFAULT_VALIDATION = {"fashion_mnist": 10000, "cifar10": 5000, "cifar10_synthetic": 500}
INPUT_SHAPES = {"fashion_mnist": (28, 28, 1), "cifar10": (32, 32, 3),
                "cifar10_synthetic": (32, 32, 3)}
MODEL_NAMES = ("mlp", "vgg11", "resnet56")
MAX_EPOCHS = 100_000


class ConfigError(ValueError):
    """A setting that cannot be used; the message is one line."""


@dataclasses.dataclass
class ProbeSettings:
    """What the curvature and gradient-noise probes measure, and on how many examples."""

    examples: int = 5000  # fixed, seeded subset of the training set
    batch_size: int = 1000
    bn_mode: str = "inference"
    dtype: str = "float32"
    method: str = "rr"
    top_k: int = 1
    lanczos_tol: float = 1e-3
    lanczos_max_steps: int = 100
    trace_matvecs: int = 99
    frobenius_samples: int = 30
    finite_difference: bool = True
    fd_eps: float = 1e-3
    noise_examples: int = 1000  # per-example gradients for Tr C and B_simple
    seed: int = 0

    def validate(self, num_train: int) -> "ProbeSettings":
        if not 0 < self.examples <= num_train:
            raise ConfigError(f"--probe-examples must be between 1 and the training set size "
                              f"({num_train}), got {self.examples}")
        if not 2 <= self.noise_examples <= self.examples:
            raise ConfigError(f"--probe-noise-examples must be between 2 and --probe-examples "
                              f"({self.examples}), got {self.noise_examples}")
        if self.batch_size < 1:
            raise ConfigError(f"--probe-batch-size must be positive, got {self.batch_size}")
        if self.bn_mode not in ("inference", "batch"):
            raise ConfigError(f"--probe-bn must be inference or batch, got {self.bn_mode!r}")
        if self.dtype not in ("float32", "float64"):
            raise ConfigError(f"--probe-dtype must be float32 or float64, got {self.dtype!r}")
        for name in ("top_k", "lanczos_max_steps", "trace_matvecs", "frobenius_samples"):
            if getattr(self, name) < 1:
                raise ConfigError(f"probe setting {name} must be at least 1")
        return self


@dataclasses.dataclass
class RunConfig:
    """Every setting of one training run (recorded verbatim in ``config.json``)."""

    lr: float
    batch_size: int
    epochs: int = 3
    seed: int = 0
    dataset: str = "fashion_mnist"
    data_dir: str | None = None
    validation_size: int | None = None  # None: the dataset's default (DEFAULT_VALIDATION)
    train_size: int | None = None
    model: str = "mlp"
    width: int = 256
    momentum: float = 0.0
    logdir: str = "runs"
    name: str | None = None
    jit_compile: str = "auto"  # auto | on | off
    steps_per_execution: int | None = None  # None: auto (see train._steps_per_execution)
    eval_batch_size: int = 1000
    overwrite: bool = False
    lr_schedule: str | None = None
    bs_schedule: str | None = None
    ratio_schedule: str | None = None
    keep_ratio: bool = False
    grow_batch: bool = False
    probe: ProbeSettings | None = None  # curvature and noise at the end of training
    probe_every: int = 0  # also every k epochs during training (0: never)
    deterministic: bool = False  # TensorFlow op determinism (bitwise-repeatable runs)
    checkpoint_steps: int = 0  # also checkpoint every k steps inside an epoch (0: epoch ends)
    resume: bool = False  # require an existing checkpoint to resume from
    loss_target: float | None = None  # stop once the epoch's training loss is at most this
    augment: bool = False  # 4-pixel shifts and horizontal flips (image datasets)
    # Where it runs (not part of what is computed: a run may be resumed on other hardware).
    strategy: str = "auto"  # auto | none | mirrored | multiworker (see lrbs_tf.distribute)
    devices: str | None = None  # MirroredStrategy devices, e.g. "/gpu:0,/gpu:1"
    cpu_devices: int = 0  # split the CPU into this many logical devices (0: leave it)
    peer_timeout: float = 300.0  # multi-worker: seconds without progress before giving up

    def plan(self) -> TrainingPlan:
        """η, S and η/S over training (constant η/S when no schedule is given)."""
        try:
            return make_plan(self.lr, self.batch_size, self.lr_schedule, self.bs_schedule,
                             self.ratio_schedule, self.keep_ratio, self.grow_batch)
        except ScheduleError as e:
            raise ConfigError(str(e)) from None

    @property
    def ratio(self) -> float:
        return self.lr / self.batch_size

    @property
    def val_size(self) -> int:
        if self.validation_size is not None:
            return self.validation_size
        return DEFAULT_VALIDATION.get(self.dataset, 10000)

    @property
    def num_train(self) -> int:
        if self.train_size is not None:
            return self.train_size
        return TRAIN_POOL[self.dataset] - self.val_size

    @property
    def run_name(self) -> str:
        if self.name:
            return self.name
        name = f"{self.model}-{self.dataset}-lr{self.lr:g}-bs{self.batch_size}-seed{self.seed}"
        schedules = self.plan().describe()
        if schedules != {"batch_schedule": f"const:{self.batch_size:g}",
                         "lr_schedule": f"const:{self.lr:g}"}:
            digest = hashlib.sha1(repr(sorted(schedules.items())).encode()).hexdigest()[:6]
            name += f"-sched{digest}"
        return name

    @property
    def run_dir(self) -> str:
        return os.path.join(self.logdir, self.run_name)

    def validate(self) -> "RunConfig":
        Ratio(self.lr, self.batch_size)
        if self.dataset not in TRAIN_POOL:
            raise ConfigError(f"unknown dataset {self.dataset!r}; known: {', '.join(TRAIN_POOL)}")
        if self.model not in MODEL_NAMES:
            raise ConfigError(f"unknown model {self.model!r}; known: {', '.join(MODEL_NAMES)}")
        pool = TRAIN_POOL[self.dataset]
        if not 0 < self.val_size < pool:
            raise ConfigError(f"--validation-size must be between 1 and {pool - 1}, "
                              f"got {self.val_size}")
        if self.train_size is not None and not 0 < self.train_size <= pool - self.val_size:
            raise ConfigError(f"--train-size must be between 1 and {pool - self.val_size} "
                              f"(after holding out {self.val_size} for validation), "
                              f"got {self.train_size}")
        if self.batch_size > self.num_train:
            raise ConfigError(f"batch size {self.batch_size} is larger than the training set "
                              f"({self.num_train} examples)")
        for field, low, high in (("epochs", 1, MAX_EPOCHS), ("width", 1, 1 << 16),
                                 ("eval_batch_size", 1, 1 << 20), ("seed", 0, 2 ** 31 - 1)):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                raise ConfigError(f"--{field.replace('_', '-')} must be a whole number from "
                                  f"{low} to {high}, got {value!r}")
        self._check_schedules()
        if self.steps_per_execution is not None and self.steps_per_execution < 1:
            raise ConfigError(f"--steps-per-execution must be at least 1, "
                              f"got {self.steps_per_execution}")
        if not 0 <= self.momentum < 1:
            raise ConfigError(f"--momentum must be in [0, 1), got {self.momentum}")
        if self.jit_compile not in ("auto", "on", "off"):
            raise ConfigError(f"--jit must be auto, on or off, got {self.jit_compile!r}")
        if self.loss_target is not None and not 0 < self.loss_target < math.inf:
            raise ConfigError(f"--loss-target must be a positive number, got {self.loss_target}")
        if self.checkpoint_steps < 0:
            raise ConfigError(f"--checkpoint-steps must be >= 0, got {self.checkpoint_steps}")
        if self.probe_every < 0:
            raise ConfigError(f"--probe-every must be >= 0, got {self.probe_every}")
        if self.probe_every and self.probe is None:
            raise ConfigError("--probe-every needs probe settings (--probe)")
        if self.probe is not None:
            self.probe.validate(self.num_train)
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"--strategy must be one of {', '.join(STRATEGIES)}, "
                              f"got {self.strategy!r}")
        if self.cpu_devices < 0:
            raise ConfigError(f"--cpu-devices must be >= 0, got {self.cpu_devices}")
        if not self.peer_timeout > 0:
            raise ConfigError(f"--peer-timeout must be positive, got {self.peer_timeout}")
        if self.name is not None:
            try:
                check_name(self.name)
            except ValueError as e:
                raise ConfigError(str(e)) from None
        if self.data_dir is not None:
            from lrbs_tf.data import DataError, check_data_dir

            try:
                check_data_dir(self.dataset, self.data_dir)
            except DataError as e:
                raise ConfigError(str(e)) from None
        return self

    def _check_schedules(self) -> None:
        """Evaluate the schedules at 20 points per epoch (at most 20000): finite, η/S > 0,
        batch sizes from 1 to the training set."""
        plan = self.plan()
        points = min(20 * self.epochs, 20000)
        t = 0.0
        try:
            for i in range(points):
                t = self.epochs * i / points
                raw = float(plan.batch(t))
                if not math.isfinite(raw) or raw < 1:
                    raise ConfigError(f"the batch-size schedule gives {raw:g} at epoch {t:g}: "
                                      "a batch size must be at least 1")
                size = plan.batch_at(t)
                if size > self.num_train:
                    raise ConfigError(f"the batch-size schedule reaches {size} at epoch {t:g}, "
                                      f"more than the training set ({self.num_train} examples)")
                ratio = plan.ratio_at(t)
                if not 0 < ratio < math.inf or not ratio * size < math.inf:
                    raise ConfigError(f"the schedules give η/S = {ratio:g} at epoch {t:g}: it "
                                      "must be positive and finite")
        except (OverflowError, ZeroDivisionError, ValueError) as e:
            if isinstance(e, ConfigError):
                raise
            raise ConfigError(f"the schedules cannot be evaluated at epoch {t:g} ({e}): "
                              "a value overflows") from None

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out.update(ratio=self.ratio, num_train=self.num_train, run_name=self.run_name,
                   validation_size=self.val_size,
                   schedules=self.plan().describe())
        return out


def base_ratio(ratio=None, lr=None, batch_size=None, rescale=None, base=None,
               lr_schedule=None, bs_schedule=None, ratio_schedule=None) -> Ratio:
    """The base η0/S0 of a run from its command-line flags.

    ``--rescale RULE --base η0/S0 --batch-size S`` moves a recipe to batch S. Otherwise the
    usual ``--ratio``/``--lr``/``--batch-size`` forms apply, and a schedule fills in what they
    leave out: S0 = S(0) of ``--bs-schedule``, η0 = η(0) of ``--lr-schedule``, or
    η0 = (η/S)(0)·S0 of ``--ratio-schedule``.
    """
    if rescale is not None or base is not None:
        if rescale is None or base is None or batch_size is None:
            raise RatioError("--rescale needs --base LR/BATCH and --batch-size")
        if ratio is not None or lr is not None:
            raise RatioError("--rescale computes η from --base: drop --ratio/--lr")
        return rescale_lr(parse_ratio(base), batch_size, rescale)
    def explicit(spec):  # does the schedule carry its own values (no empty BASE)?
        try:
            parse_schedule(spec)
            return True
        except ScheduleError:
            return False

    if lr_schedule and explicit(lr_schedule) and (lr is not None or ratio is not None):
        raise RatioError("--lr-schedule already gives η: drop --lr/--ratio, or leave the "
                         "schedule's BASE empty to take η0 from them")
    if ratio_schedule and explicit(ratio_schedule) and (lr is not None or ratio is not None):
        raise RatioError("--ratio-schedule already gives η/S: drop --lr/--ratio, or leave "
                         "the schedule's BASE empty")
    try:
        if batch_size is None and bs_schedule and (ratio is None or "/" not in str(ratio)):
            batch_size = max(1, round(parse_schedule(bs_schedule)(0.0)))
        if lr is None and ratio is None:
            if lr_schedule:
                lr = parse_schedule(lr_schedule)(0.0)
                if not lr > 0:
                    raise RatioError("the η schedule starts at 0: give the base η with --lr")
            elif ratio_schedule and batch_size is not None:
                ratio = repr(parse_schedule(ratio_schedule)(0.0))
    except ScheduleError as e:
        if "must be a" in str(e) and "''" in str(e):  # BASE left empty: needs --ratio/--lr
            raise RatioError("the schedule leaves BASE empty: give --ratio or --lr") from None
        raise RatioError(str(e)) from None
    return resolve_ratio(ratio, lr, batch_size)


__all__ = ["RunConfig", "ProbeSettings", "ConfigError", "RatioError", "TRAIN_POOL", "base_ratio"]
