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


def aligned_empty(shape: tuple, dtype=np.float32, align: int = 64) -> np.ndarray:
    """An uninitialised array whose data starts on an ``align``-byte boundary: TensorFlow can
    then use its memory without a copy (:func:`lrbs_tf.data.pipeline.as_tensor`)."""
    dtype = np.dtype(dtype)
    size = int(np.prod(shape)) * dtype.itemsize
    buffer = np.empty(size + align, np.uint8)
    offset = (-buffer.ctypes.data) % align
    return buffer[offset : offset + size].view(dtype).reshape(shape)


def scaled_copy(x: np.ndarray, idx=None, mean=None, std=None, chunk: int = 8192) -> np.ndarray:
    """``x[idx]`` as float32 in one aligned array, filled chunk by chunk (no full-size
    temporaries): 8-bit pixels scaled by 1/255, floats as given; then ``(x - mean) / std``
    when given; a channel axis added to (N, H, W) images."""
    idx = np.arange(len(x)) if idx is None else np.asarray(idx)
    shape = (len(idx),) + x.shape[1:] + ((1,) if x.ndim == 3 else ())
    out = aligned_empty(shape)
    scale = np.float32(255 if x.dtype == np.uint8 else 1)
    for start in range(0, len(idx), chunk):
        part = x[idx[start : start + chunk]].astype(np.float32) / scale
        if mean is not None:
            part = (part - mean) / std
        out[start : start + chunk] = part.reshape((len(part),) + shape[1:])
    return out


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
    """The splits of a dataset from its training pool ``(x, y)`` and test set ``(x, y)``
    (8-bit pixels or floats): a seeded validation split (and training subset) held out of the
    pool (:func:`seeded_split`), 8-bit pixels scaled to [0, 1] (floats kept) — then, with
    ``standardize``, to zero mean and unit variance per channel with the training split's
    statistics — a channel axis added to grey images, and what was done recorded in
    ``data.info`` with the fingerprints. Each split is one float32 array (:func:`scaled_copy`)."""
    x_all, y_all = pool
    val_idx, train_idx = seeded_split(len(y_all), validation_size, train_size, seed)
    x_train = scaled_copy(x_all, train_idx)
    scaling = "pixel / 255" if x_all.dtype == np.uint8 else "as given (float32)"
    normalization = {"normalization": scaling}
    mean = std = None
    if standardize:
        axes = tuple(range(x_train.ndim - 1))
        mean, std = x_train.mean(axis=axes), x_train.std(axis=axes)
        x_train -= mean
        x_train /= std
        normalization = {
            "normalization": f"({scaling} - channel_mean) / channel_std, training split's",
            "channel_mean": mean.tolist(),
            "channel_std": std.tolist(),
        }
    data = Data(
        name=name,
        train=Split(x_train, np.asarray(y_all[train_idx], np.int32)),
        validation=Split(scaled_copy(x_all, val_idx, mean, std), y_all[val_idx]),
        test=Split(scaled_copy(test[0], None, mean, std), test[1]),
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
