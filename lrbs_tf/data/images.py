"""A folder of images in class sub-folders, the way ``--dataset FOLDER`` reads it.

The conventions are those of ``keras.utils.image_dataset_from_directory``: the class names are
the sub-folders not starting with ``.``, sorted; the images are the files ending in
:data:`IMAGE_TYPES` under each, in Keras' order (folders by path, files sorted). With
``train/`` and ``test/`` sub-folders holding the same class sub-folders, those are the splits.
Every image is resized (bilinear) to the first image's size, grey if the first image is grey,
else RGB, and decoded by TensorFlow as Keras does.

A folder is somebody's files, so every image is checked before anything is decoded
(:func:`check_images`, when the source is described, before a run writes anything): a regular
file (a link is followed, but it must end at a regular file: never a device such as
``/dev/zero`` or a FIFO) of at most :data:`MAX_IMAGE_BYTES`, that Pillow recognises from its
header as an image of at most :data:`MAX_IMAGE_PIXELS` pixels (decompression bombs refused),
and not a GIF in a folder of grey images (TensorFlow decodes GIFs as RGB only). An image that
passes and still fails to decode (a truncated file) is named when the folder loads
(:func:`read_folder`). Every refusal is a one-line :class:`~lrbs_tf.data.splits.DataError`.
"""

from __future__ import annotations

import os
import re
import stat

import numpy as np

from lrbs_tf.data.splits import DataError

IMAGE_TYPES = (".bmp", ".gif", ".jpeg", ".jpg", ".png")  # keras.utils.image_dataset_from_directory
MAX_IMAGE_BYTES = 64 * 2**20
MAX_IMAGE_PIXELS = 50_000_000
GREY_MODES = ("1", "L", "LA", "I", "I;16", "F")


def class_dirs(root: str) -> list[str]:
    """The class sub-folders of ``root``, sorted, as Keras finds them."""
    try:
        entries = sorted(os.listdir(root))
    except OSError as e:
        raise DataError(f"cannot read {root}: {e.strerror}") from None
    return [e for e in entries if os.path.isdir(os.path.join(root, e)) and not e.startswith(".")]


def images(folder: str) -> list[str]:
    """The image files under ``folder``, in Keras' order."""
    found = []
    for where, _, names in sorted(os.walk(folder), key=lambda entry: entry[0]):
        found += [os.path.join(where, f) for f in sorted(names) if f.lower().endswith(IMAGE_TYPES)]
    return found


def split_roots(root: str) -> dict:
    """``{"pool": folder[, "test": folder]}``: train/ and test/ when both hold class folders."""
    subdirs = set(class_dirs(root))
    if {"train", "test"} <= subdirs and all(
        class_dirs(os.path.join(root, s)) for s in ("train", "test")
    ):
        return {"pool": os.path.join(root, "train"), "test": os.path.join(root, "test")}
    return {"pool": root}


def check_images(paths: list[str]) -> tuple:
    """Check every image (see the module docstring); returns the first one's
    ``(height, width, channels)``."""
    shape = None
    for path in paths:
        height, width, grey, kind = _header(path)
        if shape is None:
            shape = (height, width, 1 if grey else 3)
        elif kind == "GIF" and shape[2] == 1:
            raise DataError(
                f"{path}: a GIF in a folder of grey images (the first image is grey); "
                "TensorFlow decodes GIFs as RGB only: convert it to PNG"
            )
    return shape


def _header(path: str) -> tuple:
    """``(height, width, grey, format)`` of one image, from its header, after the file checks."""
    from PIL import Image, UnidentifiedImageError

    try:
        info = os.stat(path)  # a link is followed: to a regular file only
    except OSError as e:
        raise DataError(f"cannot read image {path}: {e.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise DataError(f"{path} is not a regular file (a device, FIFO or folder): not an image")
    if not 0 < info.st_size <= MAX_IMAGE_BYTES:
        size = "empty" if info.st_size == 0 else f"{info.st_size / 2**20:.0f} MiB"
        raise DataError(f"{path} is {size}; an image must hold 1 byte to 64 MiB")
    try:
        with Image.open(path) as image:
            width, height = image.size
            grey, kind = image.mode in GREY_MODES, image.format
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError, ValueError) as e:
        raise DataError(f"cannot read image {path}: {e}") from None
    if width * height > MAX_IMAGE_PIXELS:
        raise DataError(
            f"{path} is {width}×{height} pixels, more than {MAX_IMAGE_PIXELS:,}: "
            "refused (a decompression bomb, or far too large to train on)"
        )
    return height, width, grey, kind


def read_folder(root: str, shape: tuple) -> tuple:
    """``(images as uint8 (N, H, W, C), labels)`` of the class folders under ``root``,
    decoded and resized as Keras does; a file that fails to decode is named."""
    import keras
    import tensorflow as tf

    ds = keras.utils.image_dataset_from_directory(
        root,
        labels="inferred",
        label_mode="int",
        color_mode="grayscale" if shape[-1] == 1 else "rgb",
        image_size=shape[:2],
        shuffle=False,
        batch_size=256,
        verbose=False,
    )
    try:
        xs, ys = zip(*((np.rint(x.numpy()).astype(np.uint8), y.numpy()) for x, y in ds))
    except tf.errors.InvalidArgumentError:
        raise DataError(_undecodable(root, shape)) from None
    return np.concatenate(xs), np.concatenate(ys)


def _undecodable(root: str, shape: tuple) -> str:
    """Which image TensorFlow cannot decode (searched one at a time, only after a failure)."""
    import tensorflow as tf

    for folder in class_dirs(root):
        for path in images(os.path.join(root, folder)):
            try:
                tf.image.decode_image(
                    tf.io.read_file(path), channels=shape[-1], expand_animations=False
                )
            except tf.errors.InvalidArgumentError as e:
                first = (str(e).strip().splitlines() or [""])[0]
                first = re.sub(r"\{\{.*?\}\}\s*|\s*\[Op:.*$", "", first)
                return f"cannot decode image {path} ({first[:200]})"
    return f"TensorFlow cannot decode an image under {root}"
