"""The configuration of one run, validated without importing TensorFlow."""
from __future__ import annotations

import dataclasses
import os
import re

from lrbs_tf.ratio import Ratio, RatioError

# Examples available for training + validation, per dataset (the rest is the test set).
TRAIN_POOL = {"fashion_mnist": 60000}
MODEL_NAMES = ("mlp",)


class ConfigError(ValueError):
    """A setting that cannot be used; the message is one line."""


@dataclasses.dataclass
class RunConfig:
    """Every setting of one training run (recorded verbatim in ``config.json``)."""

    lr: float
    batch_size: int
    epochs: int = 3
    seed: int = 0
    dataset: str = "fashion_mnist"
    data_dir: str | None = None
    validation_size: int = 10000
    train_size: int | None = None
    model: str = "mlp"
    width: int = 256
    momentum: float = 0.0
    logdir: str = "runs"
    name: str | None = None
    jit_compile: str = "auto"  # auto | on | off
    steps_per_execution: int | None = None  # None: auto (see resolved_steps_per_execution)
    eval_batch_size: int = 1000
    overwrite: bool = False

    @property
    def ratio(self) -> float:
        return self.lr / self.batch_size

    @property
    def num_train(self) -> int:
        if self.train_size is not None:
            return self.train_size
        return TRAIN_POOL[self.dataset] - self.validation_size

    @property
    def run_name(self) -> str:
        if self.name:
            return self.name
        return f"{self.model}-{self.dataset}-lr{self.lr:g}-bs{self.batch_size}-seed{self.seed}"

    @property
    def run_dir(self) -> str:
        return os.path.join(self.logdir, self.run_name)

    def resolved_steps_per_execution(self) -> int:
        """Train steps per tf.function call: given, or ~512 examples per call, at most 32 steps.

        Several small steps per call amortise Keras' per-call overhead (measured 1.5x faster
        at S=25 with tools/bench_fit.py); large batches need no help.
        """
        if self.steps_per_execution is not None:
            return self.steps_per_execution
        return max(1, min(32, 512 // self.batch_size))

    def validate(self) -> "RunConfig":
        Ratio(self.lr, self.batch_size)
        if self.dataset not in TRAIN_POOL:
            raise ConfigError(f"unknown dataset {self.dataset!r}; known: {', '.join(TRAIN_POOL)}")
        if self.model not in MODEL_NAMES:
            raise ConfigError(f"unknown model {self.model!r}; known: {', '.join(MODEL_NAMES)}")
        pool = TRAIN_POOL[self.dataset]
        if not 0 < self.validation_size < pool:
            raise ConfigError(f"--validation-size must be between 1 and {pool - 1}, "
                              f"got {self.validation_size}")
        if self.train_size is not None and not 0 < self.train_size <= pool - self.validation_size:
            raise ConfigError(f"--train-size must be between 1 and {pool - self.validation_size} "
                              f"(after holding out {self.validation_size} for validation), "
                              f"got {self.train_size}")
        if self.batch_size > self.num_train:
            raise ConfigError(f"batch size {self.batch_size} is larger than the training set "
                              f"({self.num_train} examples)")
        for field, low in (("epochs", 1), ("width", 1), ("eval_batch_size", 1)):
            if getattr(self, field) < low:
                raise ConfigError(f"--{field.replace('_', '-')} must be at least {low}, "
                                  f"got {getattr(self, field)}")
        if self.steps_per_execution is not None and self.steps_per_execution < 1:
            raise ConfigError(f"--steps-per-execution must be at least 1, "
                              f"got {self.steps_per_execution}")
        if not 0 <= self.momentum < 1:
            raise ConfigError(f"--momentum must be in [0, 1), got {self.momentum}")
        if self.jit_compile not in ("auto", "on", "off"):
            raise ConfigError(f"--jit must be auto, on or off, got {self.jit_compile!r}")
        if self.name is not None and not re.fullmatch(r"[A-Za-z0-9._=+-]+", self.name):
            raise ConfigError(f"--name may hold letters, digits and ._=+- only, got {self.name!r}")
        return self

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out.update(ratio=self.ratio, num_train=self.num_train, run_name=self.run_name)
        return out


__all__ = ["RunConfig", "ConfigError", "RatioError", "TRAIN_POOL"]
