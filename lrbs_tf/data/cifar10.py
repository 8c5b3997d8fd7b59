"""CIFAR-10 from the python batches or tensorflow-datasets, and a generated stand-in of the
same shape (``cifar10_synthetic``), with a seeded validation split and per-channel
normalisation."""

from __future__ import annotations

import os

import numpy as np

from lrbs_tf.data.splits import Data, DataError, make_data

CIFAR10_ARCHIVE = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"


def _read_cifar_batch(path: str) -> tuple[np.ndarray, np.ndarray]:
    import pickle

    try:
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch[b"labels"], dtype=np.int32)
    except (
        OSError,
        EOFError,
        pickle.UnpicklingError,
        KeyError,
        TypeError,
        ValueError,
        AttributeError,
    ) as e:
        raise DataError(
            f"cannot read CIFAR-10 batch {path}: {type(e).__name__}: {e} "
            "(truncated or not a CIFAR-10 python batch); download the archive "
            f"again from {CIFAR10_ARCHIVE}"
        ) from None
    if data.ndim != 2 or data.shape[1] != 3072 or len(data) != len(labels):
        raise DataError(
            f"{path}: data {data.shape} / labels {labels.shape} are not CIFAR-10 "
            "(expected N×3072 and N labels)"
        )
    if labels.min(initial=0) < 0 or labels.max(initial=0) > 9:
        raise DataError(f"{path}: labels outside 0..9")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


CIFAR10_HOST = "www.cs.toronto.edu"  # where tensorflow-datasets downloads CIFAR-10 from


def _load_cifar10_arrays(data_dir: str | None) -> tuple[dict, str]:
    searched = []
    for folder in [data_dir, os.path.join(data_dir, "cifar-10-batches-py")] if data_dir else []:
        names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
        searched.append(folder)
        if all(os.path.isfile(os.path.join(folder, n)) for n in names):
            parts = [_read_cifar_batch(os.path.join(folder, n)) for n in names]
            return {
                "train_images": np.concatenate([p[0] for p in parts[:5]]),
                "train_labels": np.concatenate([p[1] for p in parts[:5]]),
                "test_images": parts[5][0],
                "test_labels": parts[5][1],
            }, f"python batches in {os.path.abspath(folder)}"
    if not _prepared_in_tfds(data_dir) and not _resolves(CIFAR10_HOST):
        searched.append(f"tensorflow-datasets cifar10 (not prepared; offline: {CIFAR10_HOST})")
        raise DataError(_not_found(searched))
    try:
        import tensorflow_datasets as tfds

        arrays = {}
        for part in ("train", "test"):
            x, y = tfds.as_numpy(
                tfds.load(
                    "cifar10", split=part, batch_size=-1, as_supervised=True, data_dir=data_dir
                )
            )
            arrays[f"{part}_images"], arrays[f"{part}_labels"] = x, y.astype(np.int32)
        return arrays, "tensorflow-datasets cifar10"
    except Exception as e:  # offline, or no prepared tfds directory
        searched.append(f"tensorflow-datasets cifar10 ({type(e).__name__})")
    raise DataError(_not_found(searched))


def _not_found(searched) -> str:
    return (
        "CIFAR-10 not found; searched " + "; ".join(searched) + ". Fix: download "
        f"{CIFAR10_ARCHIVE}, unpack it and pass --data-dir <folder with "
        "cifar-10-batches-py>, or point --data-dir at a prepared "
        "tensorflow-datasets directory; for a smoke run use --dataset "
        "cifar10_synthetic"
    )


def _prepared_in_tfds(data_dir: str | None) -> bool:
    try:
        import tensorflow_datasets as tfds

        return tfds.builder("cifar10", data_dir=data_dir).is_prepared()
    except Exception:  # no tensorflow-datasets, or a damaged folder: not prepared
        return False


def _resolves(host: str) -> bool:
    """Whether ``host`` has an address (offline, tensorflow-datasets retries its download
    for minutes before it fails)."""
    import socket

    try:
        socket.getaddrinfo(host, 443)
    except OSError:
        return False
    return True


def synthetic_cifar10(num_train: int = 6000, num_test: int = 1000, seed: int = 1234) -> dict:
    """A generated stand-in with CIFAR-10's shapes (32×32×3 uint8, 10 classes).

    Each class has its own smooth colour pattern plus noise, so models can learn it. It is
    SYNTHETIC: every output that uses it says so (dataset name ``cifar10_synthetic``).
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:32, 0:32] / 31.0
    patterns = []
    for c in range(10):
        f = 1 + c % 4
        base = np.stack(
            [
                np.sin(np.pi * f * xx + c),
                np.cos(np.pi * f * yy - c),
                np.sin(np.pi * (xx + yy) * (1 + c // 4)),
            ],
            axis=-1,
        )
        patterns.append(127.5 + 60 * base)
    patterns = np.array(patterns)

    def make(n):
        labels = rng.integers(0, 10, n).astype(np.int32)
        images = patterns[labels] + rng.normal(0, 40, size=(n, 32, 32, 3))
        return np.clip(images, 0, 255).astype(np.uint8), labels

    (xtr, ytr), (xte, yte) = make(num_train), make(num_test)
    return {"train_images": xtr, "train_labels": ytr, "test_images": xte, "test_labels": yte}


def load_cifar10(
    data_dir: str | None = None,
    validation_size: int = 5000,
    train_size: int | None = None,
    seed: int = 0,
    synthetic: bool = False,
) -> Data:
    """CIFAR-10 with a seeded validation split (default 45000/5000), normalised per channel
    with the training split's mean and standard deviation. ``synthetic`` uses the generated
    stand-in (:func:`synthetic_cifar10`) instead of the real data."""
    if synthetic:
        arrays, source = synthetic_cifar10(), "SYNTHETIC generated stand-in (not CIFAR-10)"
    else:
        arrays, source = _load_cifar10_arrays(data_dir)
    return make_data(
        "cifar10_synthetic" if synthetic else "cifar10",
        (arrays["train_images"], arrays["train_labels"]),
        (arrays["test_images"], arrays["test_labels"]),
        validation_size=validation_size,
        train_size=train_size,
        seed=seed,
        source=source,
        num_classes=10,
        standardize=True,
        info={"synthetic": synthetic},
    )
