"""What ``--dataset`` names, found and described before anything loads, then loaded.

``--dataset`` is one of:

- a registered name (:mod:`lrbs_tf.data.specs`: ``fashion_mnist``, ``cifar10``,
  ``cifar10_synthetic``);
- ``tfds:NAME[:CONFIG]``: a tensorflow-datasets image-classification dataset already prepared in
  ``--data-dir`` (tfds' data dir; default ``~/tensorflow_datasets``): its ``train`` split and its
  ``test`` split;
- a folder of images in class sub-folders, with the conventions of
  ``keras.utils.image_dataset_from_directory`` (class names: the sub-folders, sorted; images:
  .bmp .gif .jpeg .jpg .png). With ``train/`` and ``test/`` sub-folders (each holding the same
  class sub-folders) those are the splits. Every image is resized to the first image's size;
  grey if the first image is grey, else RGB; every file is checked before any is decoded
  (:mod:`lrbs_tf.data.images`);
- an ``.npz`` file with ``x_train, y_train`` and optionally ``x_test, y_test`` and
  ``class_names``: images ``(N, H, W)`` or ``(N, H, W, C)`` (or feature vectors ``(N, D)``),
  ``uint8`` pixels (scaled by 1/255) or finite floats (used as given); integer labels in
  ``[0, classes)`` where ``classes`` is ``len(class_names)`` or the largest label + 1 (at most
  :data:`MAX_CLASSES`). Object arrays are refused, never unpickled.

Without a test split, :data:`TEST_FRACTION` of the examples is held out as the test set by a
permutation with the fixed seed :data:`TEST_SEED` (the same for every run); the validation split
is then held out of the rest by the run's seed, :data:`VALIDATION_FRACTION` by default.

Memory: a dataset is held in memory once, as float32 (4 bytes per value, shared with
TensorFlow, not copied), plus its raw pixels while it loads. :func:`check_memory` refuses one
that needs more than :func:`memory_limit` (half the machine's memory, or ``$LRBS_MAX_DATA_GB``).

:func:`describe` reads only headers, labels and the images' headers (no TensorFlow) except for
``tfds:`` sources, whose description comes from tensorflow-datasets.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import re
import zipfile

import numpy as np

from lrbs_tf.data import images, specs
from lrbs_tf.data.images import IMAGE_TYPES
from lrbs_tf.data.splits import Data, DataError, make_data

TEST_FRACTION, TEST_SEED = 0.1, 0
VALIDATION_FRACTION = 0.1
MAX_CLASSES = 100_000  # classes inferred from labels; class_names may declare more
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test", "class_names")
MEMORY_ENV = "LRBS_MAX_DATA_GB"
TFDS_HOWTO = (
    "prepare it on a machine with internet (pip install tensorflow-datasets; "
    "tfds build {name} --data_dir DIR) and copy DIR here, then pass --data-dir DIR"
)


@dataclasses.dataclass(frozen=True)
class Source:
    """A dataset as ``--dataset`` named it: ``spec`` (as given), ``kind`` (``registered``,
    ``tfds``, ``folder``, ``npz``), ``label`` (a short name for run names), the examples for
    training + validation (``train_pool``), the default validation size, the input shape, the
    class count, the test examples and the path of a file or folder source."""

    spec: str
    kind: str
    label: str
    train_pool: int
    validation: int
    input_shape: tuple
    classes: int
    test: int
    path: str | None = None
    carved_test: bool = False

    def record(self) -> dict:
        """What ``config.json`` records of the source (besides the data's fingerprints)."""
        out = {"kind": self.kind, "spec": self.spec, "classes": self.classes}
        out["input_shape"] = list(self.input_shape)
        if self.path:
            out["path"] = os.path.abspath(self.path)
        if self.carved_test:
            out["test"] = f"{self.test} examples held out with seed {TEST_SEED}"
        return out


def kind_of(dataset: str) -> str:
    """``registered``, ``tfds``, ``npz`` or ``folder``; raises DataError for anything else."""
    if not isinstance(dataset, str) or not dataset:
        raise DataError(f"--dataset must name a dataset, got {dataset!r}")
    if dataset in specs.DATASETS:
        return "registered"
    if dataset.startswith("tfds:"):
        return "tfds"
    if dataset.endswith(".npz"):
        return "npz"
    if os.path.isdir(dataset):
        return "folder"
    raise DataError(
        f"unknown dataset {dataset!r}: give {', '.join(specs.names())}, tfds:NAME[:CONFIG], "
        "a folder of images in class sub-folders or an .npz file"
        + (" (no such folder)" if os.sep in dataset else "")
    )


def describe(dataset: str, data_dir: str | None = None) -> Source:
    """The :class:`Source` of ``--dataset`` (cached per file state); raises DataError."""
    kind = kind_of(dataset)
    if kind != "registered" and kind != "tfds" and data_dir is not None:
        raise DataError("--data-dir applies to registered and tfds: datasets, not to a path")
    stamp = _stamp(dataset) if kind in ("npz", "folder") else None
    return _describe(dataset, kind, data_dir, stamp)


def _stamp(path: str):
    try:
        st = os.stat(path)
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror}") from None
    return st.st_mtime_ns, st.st_size, st.st_ino


@functools.lru_cache(maxsize=32)
def _describe(dataset, kind, data_dir, stamp) -> Source:
    if kind == "registered":
        spec = specs.DATASETS[dataset]
        return Source(
            dataset, kind, dataset, spec.train_pool, spec.validation, spec.input_shape,
            spec.classes, 1000 if spec.synthetic else 10000,
        )  # fmt: skip
    return {"tfds": _describe_tfds, "npz": _describe_npz, "folder": _describe_folder}[kind](
        dataset, data_dir
    )


def _source(spec, kind, label, pool, test, shape, classes, path=None) -> Source:
    """A Source with the test split carved out of ``pool`` when there is none (``test`` 0)."""
    carved = test == 0
    if carved:
        test = max(1, round(TEST_FRACTION * pool))
        pool -= test
    if pool < 2:
        raise DataError(f"{spec} has {pool} training example(s) left; it needs at least 2")
    validation = min(max(1, round(VALIDATION_FRACTION * pool)), pool - 1)
    return Source(
        spec, kind, _label(label), pool, validation, tuple(int(d) for d in shape), int(classes),
        int(test), path, carved,
    )  # fmt: skip


def _label(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_=+-]+", "_", text).strip("_")[:40] or "data"


def check_labels(y, classes: int, what: str) -> np.ndarray:
    """Integer labels in ``[0, classes)``, as int32; raises DataError."""
    y = integer_labels(y, what)
    if len(y) and (y.min() < 0 or y.max() >= classes):
        raise DataError(
            f"{what} has labels from {y.min()} to {y.max()}: they must be in [0, {classes})"
        )
    return y.astype(np.int32)


def integer_labels(y, what: str) -> np.ndarray:
    """A 1-d array of integer (or boolean) labels as int64; raises DataError for anything else
    (strings, floats, labels beyond int64) before any arithmetic on them."""
    y = np.asarray(y)
    if y.ndim != 1 or not (np.issubdtype(y.dtype, np.integer) or y.dtype == bool):
        raise DataError(f"{what} must be a 1-d array of integer labels, got {y.dtype} {y.shape}")
    if y.dtype == np.uint64 and len(y) and y.max() > np.iinfo(np.int64).max:
        raise DataError(f"{what} has the label {y.max()}: labels must be class indices")
    return y.astype(np.int64)


def _count_classes(spec: str, classes: int) -> int:
    if classes < 2:
        raise DataError(f"{spec} has {classes} class(es); classification needs at least 2")
    return classes


# .npz -------------------------------------------------------------------------------------------


def _npz_headers(path: str) -> dict:
    """``{key: (shape, dtype)}`` of an .npz file's arrays, from their headers only."""
    headers = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for member in archive.namelist():
                if not member.endswith(".npy"):
                    continue
                with archive.open(member) as f:
                    version = np.lib.format.read_magic(f)
                    read = (
                        np.lib.format.read_array_header_1_0
                        if version == (1, 0)
                        else np.lib.format.read_array_header_2_0
                    )
                    shape, _, dtype = read(f)
                headers[member[: -len(".npy")]] = (shape, dtype)
    except (OSError, zipfile.BadZipFile, ValueError) as e:
        raise DataError(f"cannot read {path} as an .npz file: {e}") from None
    return headers


def _npz_members(path: str, keys) -> dict:
    """The arrays ``keys`` (those present) of an .npz file; never unpickled; a member that
    cannot be read is a DataError naming it."""
    out, key = {}, None
    try:
        with np.load(path, allow_pickle=False) as arrays:
            for key in keys:
                if key in arrays:
                    out[key] = arrays[key]
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as e:
        raise DataError(f"cannot read {key or 'the arrays'} of {path}: {e}") from None
    return out


def _npz_classes(spec: str, labels: dict) -> int:
    """The class count: ``len(class_names)``, else the largest label + 1 (at most
    :data:`MAX_CLASSES`: a larger one is a wrong label far more often than a real task)."""
    for key in ("y_train", "y_test"):
        if key in labels:
            labels[key] = integer_labels(labels[key], f"{spec}: {key}")
    names = labels.get("class_names")
    if names is not None:
        if np.ndim(names) != 1:
            raise DataError(
                f"{spec}: class_names must be a 1-d array of names, got {np.shape(names)}"
            )
        return len(names)
    top = max(int(y.max()) if len(y) else 0 for k, y in labels.items() if k != "class_names")
    if top + 1 > MAX_CLASSES:
        raise DataError(
            f"{spec}: the largest label is {top}, which would make {top + 1:,} classes (more than "
            f"{MAX_CLASSES:,}): check the labels, or declare the classes with class_names"
        )
    return top + 1


def _describe_npz(spec: str, _data_dir) -> Source:
    if not os.path.isfile(spec):
        raise DataError(f"--dataset {spec}: no such file")
    headers = _npz_headers(spec)
    missing = [k for k in ("x_train", "y_train") if k not in headers]
    if missing:
        raise DataError(f"{spec} lacks {' and '.join(missing)} (it has {', '.join(headers)})")
    if ("x_test" in headers) != ("y_test" in headers):
        raise DataError(f"{spec} has only one of x_test and y_test: give both or neither")
    objects = [k for k in NPZ_KEYS if k in headers and headers[k][1].hasobject]
    if objects:
        raise DataError(
            f"{spec}: {', '.join(objects)}: dtype object (Python objects), which lrbs_tf "
            "never unpickles: save numbers (and class_names as strings)"
        )
    labels = _npz_members(spec, ("y_train", "y_test", "class_names"))
    classes = _npz_classes(spec, labels)
    for part in ("train", "test"):
        if f"x_{part}" not in headers:
            continue
        shape, dtype = headers[f"x_{part}"]
        _check_images(spec, f"x_{part}", shape, dtype, headers["x_train"][0])
        check_labels(labels[f"y_{part}"], classes, f"{spec}: y_{part}")
        if shape[0] != len(labels[f"y_{part}"]):
            raise DataError(
                f"{spec}: x_{part} has {shape[0]} examples but y_{part} has "
                f"{len(labels[f'y_{part}'])} labels"
            )
    shape = headers["x_train"][0]
    test = headers["x_test"][0][0] if "x_test" in headers else 0
    image = shape[1:] + ((1,) if len(shape) == 3 else ())
    label = os.path.splitext(os.path.basename(spec))[0]
    classes = _count_classes(spec, classes)
    return _source(spec, "npz", label, shape[0], test, image, classes, path=spec)


def _check_images(spec, key, shape, dtype, train_shape) -> None:
    if len(shape) < 2 or shape[0] == 0 or 0 in shape[1:]:
        raise DataError(f"{spec}: {key} must hold examples (N, ...) of some size, got {shape}")
    if dtype != np.uint8 and not np.issubdtype(dtype, np.floating):
        raise DataError(f"{spec}: {key} must be uint8 pixels or floats, got {dtype}")
    if tuple(shape[1:]) != tuple(train_shape[1:]):
        raise DataError(f"{spec}: {key} has shape {shape}, x_train {train_shape}")


def _load_npz(source: Source) -> tuple:
    arrays = _npz_members(source.path, NPZ_KEYS[:4])
    pool = (arrays["x_train"], check_labels(arrays["y_train"], source.classes, "y_train"))
    test = None
    if "x_test" in arrays:
        test = (arrays["x_test"], check_labels(arrays["y_test"], source.classes, "y_test"))
    return pool, test, f"{os.path.abspath(source.path)} (.npz)"


# image folder (lrbs_tf.data.images) ------------------------------------------------------------


def _describe_folder(spec: str, _data_dir) -> Source:
    roots = images.split_roots(spec)
    classes = images.class_dirs(roots["pool"])
    if "test" in roots and images.class_dirs(roots["test"]) != classes:
        raise DataError(f"{spec}: train/ and test/ hold different class folders")
    found = {
        part: [p for c in classes for p in images.images(os.path.join(root, c))]
        for part, root in roots.items()
    }
    if not found["pool"]:
        raise DataError(
            f"{spec} holds no images in class sub-folders ({', '.join(IMAGE_TYPES)}); "
            "expected FOLDER/CLASS/IMAGE"
        )
    _count_classes(spec, len(classes))
    shape = images.check_images(found["pool"] + found.get("test", []))
    label = os.path.basename(os.path.normpath(spec))
    return _source(
        spec, "folder", label, len(found["pool"]), len(found.get("test", [])), shape,
        len(classes), path=spec,
    )  # fmt: skip


def _load_folder(source: Source) -> tuple:
    arrays = {}
    for part, root in images.split_roots(source.path).items():
        x, y = images.read_folder(root, source.input_shape)
        arrays[part] = (x, check_labels(y, source.classes, root))
    return arrays["pool"], arrays.get("test"), f"{os.path.abspath(source.path)} (image folder)"


# tensorflow-datasets ----------------------------------------------------------------------------


def _tfds_builder(spec: str, data_dir):
    import tensorflow_datasets as tfds

    name = spec.removeprefix("tfds:").replace(":", "/", 1)
    if not name or name.startswith("/"):
        raise DataError(f"--dataset {spec}: give tfds:NAME or tfds:NAME:CONFIG")
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as e:  # tfds raises several types for unknown or unreadable datasets
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"tensorflow-datasets: {first[:200]}") from None
    if not builder.is_prepared():
        raise DataError(
            f"tensorflow-datasets has no prepared copy of {name} in {builder.data_dir} "
            "(it cannot download here): " + TFDS_HOWTO.format(name=name)
        )
    return builder


def _tfds_keys(spec: str, builder) -> tuple:
    import tensorflow_datasets as tfds

    features = builder.info.features
    keys = builder.info.supervised_keys
    if keys and len(keys) == 2 and all(isinstance(k, str) for k in keys):
        image, label = keys
    else:
        image = next((k for k, f in features.items() if isinstance(f, tfds.features.Image)), None)
        label = next(
            (k for k, f in features.items() if isinstance(f, tfds.features.ClassLabel)), None
        )
    if image is None or label is None or not isinstance(features[label], tfds.features.ClassLabel):
        raise DataError(f"{spec} is not an image-classification dataset (image and class label)")
    return image, label


def _describe_tfds(spec: str, data_dir) -> Source:
    builder = _tfds_builder(spec, data_dir)
    image, label = _tfds_keys(spec, builder)
    splits = builder.info.splits
    if "train" not in splits:
        raise DataError(f"{spec} has no train split (it has {', '.join(splits)})")
    shape = builder.info.features[image].shape
    if any(d is None for d in shape):
        raise DataError(f"{spec}: images of varying size {shape} are not supported")
    classes = _count_classes(spec, builder.info.features[label].num_classes)
    test = splits["test"].num_examples if "test" in splits else 0
    return _source(
        spec, "tfds", builder.info.name, splits["train"].num_examples, test, shape, classes
    )


def _load_tfds(source: Source, data_dir) -> tuple:
    import tensorflow_datasets as tfds

    builder = _tfds_builder(source.spec, data_dir)
    image, label = _tfds_keys(source.spec, builder)
    arrays = {}
    for part in ("train", "test") if source.test and not source.carved_test else ("train",):
        batch = tfds.as_numpy(builder.as_dataset(split=part, batch_size=-1))
        arrays[part] = (batch[image], check_labels(batch[label], source.classes, part))
    where = f"tensorflow-datasets {builder.info.full_name} in {builder.data_dir}"
    return arrays["train"], arrays.get("test"), where


# loading ----------------------------------------------------------------------------------------


def memory_limit() -> int:
    """Bytes a dataset may take in memory: ``$LRBS_MAX_DATA_GB`` GB, else half of RAM."""
    value = os.environ.get(MEMORY_ENV)
    if value:
        try:
            gb = float(value)
        except ValueError:
            gb = math.nan
        if not 0 < gb < math.inf:
            raise DataError(f"${MEMORY_ENV} must be a positive number of GB, got {value!r}")
        return int(gb * 1e9)
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2


def check_memory(source: Source, train_examples: int, validation: int) -> None:
    """Refuse a dataset whose float32 splits plus its raw pixels exceed :func:`memory_limit`."""
    values = math.prod(source.input_shape)
    held = 4 * values * (train_examples + validation + source.test)
    raw = values * (source.train_pool + source.test)  # uint8 while loading; floats are larger
    limit = memory_limit()
    if held + raw > limit:
        raise DataError(
            f"{source.spec} needs about {(held + raw) / 1e9:.3g} GB in memory "
            f"({train_examples + validation + source.test} examples × {values} float32 values), "
            f"more than the limit of {limit / 1e9:.3g} GB: train on a subset (--train-size) or "
            f"raise ${MEMORY_ENV}"
        )


def check_finite(x, what: str, chunk: int = 4096) -> None:
    """Refuse NaN or infinite pixels (a run would diverge and blame its η/S), with their count
    and the first example holding one; integer arrays pass at once."""
    if x is None or not np.issubdtype(x.dtype, np.floating):
        return
    count, first = 0, None
    for start in range(0, len(x), chunk):
        bad = ~np.isfinite(x[start : start + chunk]).reshape(len(x[start : start + chunk]), -1)
        rows = np.flatnonzero(bad.any(axis=1))
        count += int(bad.sum())
        if first is None and len(rows):
            first = start + int(rows[0])
    if count:
        raise DataError(
            f"{what} hold {count} NaN or infinite value(s), the first in example {first}: "
            "clean the data (a run on them diverges whatever its η/S)"
        )


def load(
    dataset: str,
    *,
    validation_size: int | None,
    train_size: int | None,
    seed: int,
    data_dir: str | None = None,
) -> Data:
    """The splits of a file, folder or tfds source (registered names load in
    :func:`lrbs_tf.data.datasets.load_dataset`)."""
    source = describe(dataset, data_dir)
    validation = source.validation if validation_size is None else validation_size
    check_memory(source, train_size or source.train_pool - validation, validation)
    if source.kind == "tfds":
        pool, test, where = _load_tfds(source, data_dir)
    else:
        pool, test, where = {"npz": _load_npz, "folder": _load_folder}[source.kind](source)
    if len(pool[1]) != source.train_pool + (source.test if source.carved_test else 0):
        raise DataError(f"{dataset} changed while it was read; run again")
    for what, x in (("training", pool[0]), ("test", None if test is None else test[0])):
        check_finite(x, f"{dataset}: the {what} images")
    if test is None:
        order = np.random.default_rng(TEST_SEED).permutation(len(pool[1]))
        test_idx, rest = np.sort(order[: source.test]), np.sort(order[source.test :])
        test, pool = (pool[0][test_idx], pool[1][test_idx]), (pool[0][rest], pool[1][rest])
    return make_data(
        dataset,
        pool,
        test,
        validation_size=validation,
        train_size=train_size,
        seed=seed,
        source=where,
        num_classes=source.classes,
        info={"data_source": source.record()},
    )
