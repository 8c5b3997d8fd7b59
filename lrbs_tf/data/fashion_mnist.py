"""Fashion-MNIST from idx files (or tensorflow-datasets), with a seeded validation split.

Fashion-MNIST is read from an explicit folder (``--data-dir``, else ``$LRBS_DATA_DIR``), which
is used or refused, never skipped; without one, from the Debian package location
``/usr/share/datasets/fashion-mnist`` (``apt-get install dataset-fashion-mnist``), and finally
through tensorflow-datasets (which downloads when online). A file that is there but truncated
or malformed is an error, never skipped silently.
"""

from __future__ import annotations

import gzip
import logging
import os
import struct
import zlib

import numpy as np

from lrbs_tf.data.splits import Data, DataError, make_data

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


def read_idx(path: str, ndim: int) -> np.ndarray:
    """Read an unsigned-byte idx file (optionally gzipped) with ``ndim`` dimensions."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(
            f"cannot read {path}: {e} (truncated or not gzip?); "
            "reinstall it (apt-get install --reinstall dataset-fashion-mnist) or "
            "point --data-dir at a good copy"
        ) from None
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path} is too short ({len(raw)} bytes) to be an idx file")
    magic, *dims = struct.unpack(f">{1 + ndim}I", raw[:header])
    if magic != _IDX_MAGIC[ndim]:
        raise DataError(
            f"{path} is not a {ndim}-d unsigned-byte idx file "
            f"(magic {magic}, expected {_IDX_MAGIC[ndim]})"
        )
    expected = int(np.prod(dims))
    if len(raw) - header != expected:
        raise DataError(
            f"{path} holds {len(raw) - header} bytes of data, "
            f"the header promises {expected} (dims {dims}): truncated or corrupt"
        )
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
        missing = [
            stem + ".gz"
            for stem in FASHION_MNIST_FILES.values()
            if _find_file(data_dir, stem) is None
        ]
        if 0 < len(missing) < len(FASHION_MNIST_FILES):
            raise DataError(
                f"{label} {data_dir} lacks {', '.join(missing)} of the four Fashion-MNIST idx files"
            )


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
    arrays = {
        key: read_idx(path, 3 if key.endswith("images") else 1) for key, path in paths.items()
    }
    for part in ("train", "test"):
        images, labels = arrays[f"{part}_images"], arrays[f"{part}_labels"]
        if images.shape[1:] != (28, 28) or len(images) != len(labels):
            raise DataError(
                f"{directory}: {part} images {images.shape} and labels {labels.shape} "
                "do not form a 28x28 Fashion-MNIST split"
            )
        if len(images) == 0:
            raise DataError(f"{paths[f'{part}_images']} holds no images (an empty idx file)")
        if labels.max(initial=0) > 9:
            raise DataError(f"{directory}: {part} labels go up to {labels.max()}, expected 0..9")
    arrays["files"] = {key: os.path.abspath(path) for key, path in paths.items()}
    return arrays


def _load_fashion_mnist_tfds(data_dir: str | None) -> dict:
    import tensorflow_datasets as tfds  # heavy; only when the idx files are nowhere

    arrays = {}
    for part in ("train", "test"):
        x, y = tfds.as_numpy(
            tfds.load(
                "fashion_mnist", split=part, batch_size=-1, as_supervised=True, data_dir=data_dir
            )
        )
        arrays[f"{part}_images"], arrays[f"{part}_labels"] = x[..., 0], y
    return arrays


def load_fashion_mnist(
    data_dir: str | None = None,
    validation_size: int = 10000,
    train_size: int | None = None,
    seed: int = 0,
    allow_download: bool = True,
) -> Data:
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
        searched.append(
            "tensorflow-datasets 'fashion_mnist'"
            + (f" in {explicit}" if explicit else " (download)")
        )
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
            f"folder and pass --data-dir (or set ${ENV_DATA_DIR})"
        )
    data = make_data(
        "fashion_mnist",
        (arrays["train_images"], arrays["train_labels"].astype(np.int32)),
        (arrays["test_images"], arrays["test_labels"].astype(np.int32)),
        validation_size=validation_size,
        train_size=train_size,
        seed=seed,
        source=source,
        num_classes=10,
        info={"files": arrays.get("files")},
    )
    log.info(
        "Fashion-MNIST from %s: %d train / %d validation / %d test",
        source,
        len(data.train),
        len(data.validation),
        len(data.test),
    )
    return data
