"""Datasets as numpy arrays: the splits a run uses, where they came from, and loading a
dataset by name (:mod:`.fashion_mnist`, :mod:`.cifar10`)."""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np


class DataError(RuntimeError):
    """Data that cannot be found or read; the message says where we looked and how to fix it."""


@dataclasses.dataclass
class Split:
    """Images ``x`` (float32 in [0, 1], NHWC) and integer labels ``y``."""

    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.y)


@dataclasses.dataclass
class Data:
    """Train / validation / test splits plus a record of where they came from."""

    name: str
    train: Split
    validation: Split
    test: Split
    num_classes: int
    source: str
    info: dict


def seeded_split(n_all: int, validation_size: int, train_size: int | None, seed: int):
    """Indices ``(validation, train)``: a seeded permutation, validation first, then the
    training examples (the first ``train_size`` of them when a subset is asked for)."""
    if not 0 < validation_size < n_all:
        raise DataError(f"validation size {validation_size} must be between 1 and {n_all - 1}")
    order = np.random.default_rng(seed).permutation(n_all)
    val_idx, train_idx = order[:validation_size], order[validation_size:]
    if train_size is not None:
        if not 0 < train_size <= len(train_idx):
            raise DataError(f"train size {train_size} must be between 1 and {len(train_idx)}")
        train_idx = train_idx[:train_size]
    return val_idx, train_idx


def fingerprint(*arrays: np.ndarray) -> str:
    digest = hashlib.sha1()
    for a in arrays:
        digest.update(np.ascontiguousarray(a).tobytes())
    return digest.hexdigest()[:16]


def load_dataset(name: str, **kwargs) -> Data:
    """Load a registered dataset by name (see :mod:`lrbs_tf.data.specs`)."""
    from lrbs_tf.data import cifar10, fashion_mnist
    from lrbs_tf.data.specs import DATASETS

    loaders = {
        "fashion_mnist": fashion_mnist.load_fashion_mnist,
        "cifar10": cifar10.load_cifar10,
        "cifar10_synthetic": lambda **kw: cifar10.load_cifar10(synthetic=True, **kw),
    }
    if name not in loaders:
        raise DataError(f"unknown dataset {name!r}; known: {', '.join(sorted(loaders))}")
    if name != "fashion_mnist":
        kwargs = {k: v for k, v in kwargs.items() if k != "allow_download"}
    if kwargs.get("validation_size") is None:
        kwargs["validation_size"] = DATASETS[name].validation
    return loaders[name](**kwargs)


def load_for(config) -> Data:
    """The data of a run: its dataset with its split (seed, sizes) and data folder, from a
    :class:`~lrbs_tf.training.config.RunConfig` or the ``config`` of a saved ``config.json``
    (where the validation size is recorded as resolved)."""
    if not isinstance(config, dict):
        config = dict(vars(config), validation_size=config.val_size)
    return load_dataset(
        config["dataset"],
        data_dir=config.get("data_dir"),
        validation_size=config["validation_size"],
        train_size=config.get("train_size"),
        seed=config["seed"],
    )
