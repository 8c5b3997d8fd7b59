"""Datasets as numpy arrays: Fashion-MNIST from idx files (or tensorflow-datasets), splits, subsets.

Fashion-MNIST is searched for, in order, in ``--data-dir``, ``$LRBS_DATA_DIR``, the Debian
package location ``/usr/share/datasets/fashion-mnist`` (``apt-get install dataset-fashion-mnist``)
and finally through tensorflow-datasets (which downloads when online). The first place that has
the four idx files is used; a file that is there but truncated or malformed is an error, never
skipped silently.
"""
from __future__ import annotations

import dataclasses
import gzip
import hashlib
import logging
import os
import struct
import zlib

import numpy as np

log = logging.getLogger(__name__)

DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
ENV_DATA_DIR = "LRBS_DATA_DIR"
FASHION_MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_IDX_MAGIC = {1: 2049, 3: 2051}  # number of dimensions -> magic number of unsigned-byte idx files


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


def read_idx(path: str, ndim: int) -> np.ndarray:
    """Read an unsigned-byte idx file (optionally gzipped) with ``ndim`` dimensions."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"cannot read {path}: {e} (truncated or not gzip?); "
                        "reinstall it (apt-get install --reinstall dataset-fashion-mnist) or "
                        "point --data-dir at a good copy") from None
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path} is too short ({len(raw)} bytes) to be an idx file")
    magic, *dims = struct.unpack(f">{1 + ndim}I", raw[:header])
    if magic != _IDX_MAGIC[ndim]:
        raise DataError(f"{path} is not a {ndim}-d unsigned-byte idx file "
                        f"(magic {magic}, expected {_IDX_MAGIC[ndim]})")
    expected = int(np.prod(dims))
    if len(raw) - header != expected:
        raise DataError(f"{path} holds {len(raw) - header} bytes of data, "
                        f"the header promises {expected} (dims {dims}): truncated or corrupt")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _find_file(directory: str, stem: str) -> str | None:
    for candidate in (stem + ".gz", stem):
        path = os.path.join(directory, candidate)
        if os.path.isfile(path):
            return path
    return None


def _candidate_dirs(data_dir: str | None) -> list[tuple[str, str]]:
    """Where to look: an explicit folder (``--data-dir``, else ``$LRBS_DATA_DIR``) alone — it is
    used or refused, never skipped — otherwise the Debian package's folder."""
    if data_dir:
        return [("--data-dir", data_dir)]
    if os.environ.get(ENV_DATA_DIR):
        return [(f"${ENV_DATA_DIR}", os.environ[ENV_DATA_DIR])]
    return [("Debian package dataset-fashion-mnist", DEBIAN_FASHION_MNIST)]


def check_data_dir(dataset: str, data_dir: str, label: str = "--data-dir") -> None:
    """Refuse an explicit data folder that cannot be what it is given for (before TensorFlow
    loads): it must be a folder; for Fashion-MNIST it holds all four idx files or none of them
    (then tensorflow-datasets reads or downloads its own copy there)."""
    if not os.path.isdir(data_dir):
        raise DataError(f"{label} {data_dir} is not a folder")
    if dataset == "fashion_mnist":
        missing = [stem + ".gz" for stem in FASHION_MNIST_FILES.values()
                   if _find_file(data_dir, stem) is None]
        if 0 < len(missing) < len(FASHION_MNIST_FILES):
            raise DataError(f"{label} {data_dir} lacks {', '.join(missing)} of the four "
                            "Fashion-MNIST idx files")


_IDX_CACHE: dict = {}


def _load_fashion_mnist_idx(directory: str) -> dict | None:
    """The four arrays from ``directory``, ``None`` if any file is missing there.

    Parsed files are cached in memory (keyed by path, size and modification time), so sweeps
    and tests that load the same files many times in one process read them once.
    """
    paths = {key: _find_file(directory, stem) for key, stem in FASHION_MNIST_FILES.items()}
    if not all(paths.values()):
        return None
    key = tuple((p, os.stat(p).st_size, os.stat(p).st_mtime_ns) for p in paths.values())
    if key not in _IDX_CACHE:
        _IDX_CACHE.clear()
        _IDX_CACHE[key] = _parse_fashion_mnist(directory, paths)
    return dict(_IDX_CACHE[key])


def _parse_fashion_mnist(directory: str, paths: dict) -> dict:
    arrays = {key: read_idx(path, 3 if key.endswith("images") else 1) for key, path in paths.items()}
    for part in ("train", "test"):
        images, labels = arrays[f"{part}_images"], arrays[f"{part}_labels"]
        if images.shape[1:] != (28, 28) or len(images) != len(labels):
            raise DataError(f"{directory}: {part} images {images.shape} and labels {labels.shape} "
                            "do not form a 28x28 Fashion-MNIST split")
        if labels.max(initial=0) > 9:
            raise DataError(f"{directory}: {part} labels go up to {labels.max()}, expected 0..9")
    arrays["files"] = {key: os.path.abspath(path) for key, path in paths.items()}
    return arrays


def _load_fashion_mnist_tfds(data_dir: str | None) -> dict:
    import tensorflow_datasets as tfds  # heavy; only when the idx files are nowhere

    arrays = {}
    for part in ("train", "test"):
        x, y = tfds.as_numpy(tfds.load("fashion_mnist", split=part, batch_size=-1,
                                       as_supervised=True, data_dir=data_dir))
        arrays[f"{part}_images"], arrays[f"{part}_labels"] = x[..., 0], y
    return arrays


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


def _fingerprint(*arrays: np.ndarray) -> str:
    digest = hashlib.sha1()
    for a in arrays:
        digest.update(np.ascontiguousarray(a).tobytes())
    return digest.hexdigest()[:16]


def load_fashion_mnist(data_dir: str | None = None, validation_size: int = 10000,
                       train_size: int | None = None, seed: int = 0,
                       allow_download: bool = True) -> Data:
    """Fashion-MNIST with a seeded validation split held out of the 60000 training images.

    ``train_size`` keeps a seeded subset of what remains for training; the test set (10000) is
    always the official one. Images are scaled to [0, 1] with shape (N, 28, 28, 1).
    """
    searched = []
    arrays = source = None
    for label, directory in _candidate_dirs(data_dir):
        searched.append(f"{label}: {directory}")
        arrays = _load_fashion_mnist_idx(directory)
        if arrays is not None:
            source = f"idx files in {os.path.abspath(directory)} ({label})"
            break
    explicit = data_dir or os.environ.get(ENV_DATA_DIR) or None
    if explicit:
        check_data_dir("fashion_mnist", explicit, _candidate_dirs(data_dir)[0][0])
    if arrays is None and allow_download:
        searched.append("tensorflow-datasets 'fashion_mnist'"
                        + (f" in {explicit}" if explicit else " (download)"))
        try:
            arrays = _load_fashion_mnist_tfds(explicit)
            source = "tensorflow-datasets fashion_mnist"
        except Exception as e:  # tfds raises many types when offline; report them all the same way
            log.debug("tensorflow-datasets failed", exc_info=True)
            searched[-1] += f" failed: {type(e).__name__}: {str(e).splitlines()[0][:160]}"
    if arrays is None:
        raise DataError(
            "Fashion-MNIST not found; searched " + "; ".join(searched) + ". Fix: run "
            "'sudo apt-get install dataset-fashion-mnist', or put train-images-idx3-ubyte.gz, "
            "train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz in a "
            f"folder and pass --data-dir (or set ${ENV_DATA_DIR})")
    x_all, y_all = arrays["train_images"], arrays["train_labels"].astype(np.int32)
    val_idx, train_idx = seeded_split(len(y_all), validation_size, train_size, seed)

    def split(x, y, idx=None):
        if idx is not None:
            x, y = x[idx], y[idx]
        return Split((x.astype(np.float32) / 255.0)[..., None], y.astype(np.int32))

    data = Data(
        name="fashion_mnist",
        train=split(x_all, y_all, train_idx),
        validation=split(x_all, y_all, val_idx),
        test=split(arrays["test_images"], arrays["test_labels"]),
        num_classes=10,
        source=source,
        info={},
    )
    data.info = {
        "dataset": "fashion_mnist",
        "source": source,
        "files": arrays.get("files"),
        "split_seed": seed,
        "train_size": len(data.train),
        "validation_size": len(data.validation),
        "test_size": len(data.test),
        "train_fingerprint": _fingerprint(data.train.x, data.train.y),
        "validation_fingerprint": _fingerprint(data.validation.y),
    }
    log.info("Fashion-MNIST from %s: %d train / %d validation / %d test", source,
             len(data.train), len(data.validation), len(data.test))
    return data


CIFAR10_ARCHIVE = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"


def _read_cifar_batch(path: str) -> tuple[np.ndarray, np.ndarray]:
    import pickle

    try:
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch[b"labels"], dtype=np.int32)
    except (OSError, EOFError, pickle.UnpicklingError, KeyError, TypeError, ValueError,
            AttributeError) as e:
        raise DataError(f"cannot read CIFAR-10 batch {path}: {type(e).__name__}: {e} "
                        "(truncated or not a CIFAR-10 python batch); download the archive "
                        f"again from {CIFAR10_ARCHIVE}") from None
    if data.ndim != 2 or data.shape[1] != 3072 or len(data) != len(labels):
        raise DataError(f"{path}: data {data.shape} / labels {labels.shape} are not CIFAR-10 "
                        "(expected N×3072 and N labels)")
    if labels.min(initial=0) < 0 or labels.max(initial=0) > 9:
        raise DataError(f"{path}: labels outside 0..9")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def _load_cifar10_arrays(data_dir: str | None) -> tuple[dict, str]:
    searched = []
    for folder in ([data_dir, os.path.join(data_dir, "cifar-10-batches-py")] if data_dir else []):
        names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
        searched.append(folder)
        if all(os.path.isfile(os.path.join(folder, n)) for n in names):
            parts = [_read_cifar_batch(os.path.join(folder, n)) for n in names]
            return {"train_images": np.concatenate([p[0] for p in parts[:5]]),
                    "train_labels": np.concatenate([p[1] for p in parts[:5]]),
                    "test_images": parts[5][0], "test_labels": parts[5][1]}, \
                f"python batches in {os.path.abspath(folder)}"
    try:
        import tensorflow_datasets as tfds

        arrays = {}
        for part in ("train", "test"):
            x, y = tfds.as_numpy(tfds.load("cifar10", split=part, batch_size=-1,
                                           as_supervised=True, data_dir=data_dir))
            arrays[f"{part}_images"], arrays[f"{part}_labels"] = x, y.astype(np.int32)
        return arrays, "tensorflow-datasets cifar10"
    except Exception as e:  # offline, or no prepared tfds directory
        searched.append(f"tensorflow-datasets cifar10 ({type(e).__name__})")
    raise DataError("CIFAR-10 not found; searched " + "; ".join(searched) + ". Fix: download "
                    f"{CIFAR10_ARCHIVE}, unpack it and pass --data-dir <folder with "
                    "cifar-10-batches-py>, or point --data-dir at a prepared "
                    "tensorflow-datasets directory; for a smoke run use --dataset "
                    "cifar10_synthetic")


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
        base = np.stack([np.sin(np.pi * f * xx + c), np.cos(np.pi * f * yy - c),
                         np.sin(np.pi * (xx + yy) * (1 + c // 4))], axis=-1)
        patterns.append(127.5 + 60 * base)
    patterns = np.array(patterns)

    def make(n):
        labels = rng.integers(0, 10, n).astype(np.int32)
        images = patterns[labels] + rng.normal(0, 40, size=(n, 32, 32, 3))
        return np.clip(images, 0, 255).astype(np.uint8), labels

    (xtr, ytr), (xte, yte) = make(num_train), make(num_test)
    return {"train_images": xtr, "train_labels": ytr, "test_images": xte, "test_labels": yte}


def load_cifar10(data_dir: str | None = None, validation_size: int = 5000,
                 train_size: int | None = None, seed: int = 0, synthetic: bool = False) -> Data:
    """CIFAR-10 with a seeded validation split (default 45000/5000), normalised per channel
    with the training split's mean and standard deviation. ``synthetic`` uses the generated
    stand-in (:func:`synthetic_cifar10`) instead of the real data."""
    if synthetic:
        arrays, source = synthetic_cifar10(), "SYNTHETIC generated stand-in (not CIFAR-10)"
    else:
        arrays, source = _load_cifar10_arrays(data_dir)
    x_all, y_all = arrays["train_images"], arrays["train_labels"]
    val_idx, train_idx = seeded_split(len(y_all), validation_size, train_size, seed)
    x_train = x_all[train_idx].astype(np.float32) / 255.0
    mean = x_train.mean(axis=(0, 1, 2))
    std = x_train.std(axis=(0, 1, 2))

    def split(x, y):
        return Split(((x.astype(np.float32) / 255.0 - mean) / std).astype(np.float32), y)

    name = "cifar10_synthetic" if synthetic else "cifar10"
    data = Data(name=name, train=split(x_all[train_idx], y_all[train_idx]),
                validation=split(x_all[val_idx], y_all[val_idx]),
                test=split(arrays["test_images"], arrays["test_labels"]),
                num_classes=10, source=source, info={})
    data.info = {"dataset": name, "source": source, "synthetic": synthetic, "split_seed": seed,
                 "train_size": len(data.train), "validation_size": len(data.validation),
                 "test_size": len(data.test), "channel_mean": mean.tolist(),
                 "channel_std": std.tolist(),
                 "train_fingerprint": _fingerprint(data.train.x, data.train.y),
                 "validation_fingerprint": _fingerprint(data.validation.y)}
    return data


LOADERS = {"fashion_mnist": load_fashion_mnist, "cifar10": load_cifar10}
LOADERS["cifar10_synthetic"] = lambda **kw: load_cifar10(synthetic=True, **kw)


def load_dataset(name: str, **kwargs) -> Data:
    """Load a registered dataset by name (see :data:`LOADERS`)."""
    if name not in LOADERS:
        raise DataError(f"unknown dataset {name!r}; known: {', '.join(sorted(LOADERS))}")
    if name != "fashion_mnist":
        kwargs = {k: v for k, v in kwargs.items() if k != "allow_download"}
    if kwargs.get("validation_size") is None:
        from lrbs_tf.data.specs import DATASETS

        kwargs["validation_size"] = DATASETS[name].validation
    return LOADERS[name](**kwargs)
