"""What a dataset is once loaded: the arrays of its splits (:class:`Split`, :class:`Data`), the
seeded split of a training pool into training and validation examples, and the fingerprint
recorded with a run."""

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


def make_data(
    name: str,
    pool: tuple,
    test: tuple,
    *,
    validation_size: int,
    train_size: int | None,
    seed: int,
    source: str,
    num_classes: int,
    standardize: bool = False,
    info: dict | None = None,
) -> Data:
    """The splits of a dataset from its training pool ``(x, y)`` and test set ``(x, y)`` of
    8-bit images: a seeded validation split (and training subset) held out of the pool
    (:func:`seeded_split`), pixels scaled to [0, 1] — then, with ``standardize``, to zero mean
    and unit variance per channel with the training split's statistics — a channel axis added
    to grey images, and what was done recorded in ``data.info`` with the fingerprints."""
    x_all, y_all = pool
    val_idx, train_idx = seeded_split(len(y_all), validation_size, train_size, seed)
    x_train = x_all[train_idx].astype(np.float32) / 255.0
    normalization = {"normalization": "pixel / 255"}
    if standardize:
        mean, std = x_train.mean(axis=(0, 1, 2)), x_train.std(axis=(0, 1, 2))
        normalization = {
            "normalization": "(pixel / 255 - channel_mean) / channel_std, training split's",
            "channel_mean": mean.tolist(),
            "channel_std": std.tolist(),
        }

    def scaled(x):
        x = x if x.dtype == np.float32 else x.astype(np.float32) / 255.0
        if standardize:
            x = ((x - mean) / std).astype(np.float32)
        return x[..., None] if x.ndim == 3 else x

    data = Data(
        name=name,
        train=Split(scaled(x_train), y_all[train_idx]),
        validation=Split(scaled(x_all[val_idx]), y_all[val_idx]),
        test=Split(scaled(test[0]), test[1]),
        num_classes=num_classes,
        source=source,
        info={},
    )
    data.info = {
        "dataset": name,
        "source": source,
        **(info or {}),
        "split_seed": seed,
        "train_size": len(data.train),
        "validation_size": len(data.validation),
        "test_size": len(data.test),
        **normalization,
        "train_fingerprint": fingerprint(data.train.x, data.train.y),
        "validation_fingerprint": fingerprint(data.validation.y),
    }
    return data
