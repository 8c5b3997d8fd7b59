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
