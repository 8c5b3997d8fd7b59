"""The variable-batch tf.data pipeline: one dataset per epoch, every example exactly once.

An epoch is per data point: whatever the batch sizes, it visits each training example once, in a
fresh order. The order of epoch ``e`` is a stateless permutation drawn from ``(seed, e)``, so it
can be rebuilt exactly after a restart, and batches ``[k, ...)`` of an epoch can be skipped
without replaying them. The batch sizes of an epoch come from
:func:`lrbs_tf.core.plan.epoch_batch_sizes`; the last batch holds what is left.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from lrbs_tf.core.optimizers import RATIO_KEY
from lrbs_tf.distribute.strategy import data_options


def as_tensor(array) -> tf.Tensor:
    """``array`` as a CPU tensor, sharing its memory when it is C-contiguous and 64-byte
    aligned (as :func:`lrbs_tf.data.splits.aligned_empty` makes it: TensorFlow requires that
    alignment), else a copy. Tensors are returned as they are."""
    if tf.is_tensor(array):
        return array
    array = np.asarray(array)
    with tf.device("/cpu:0"):
        if array.flags.c_contiguous and array.ctypes.data % 64 == 0 and array.size:
            return tf.experimental.dlpack.from_dlpack(array.__dlpack__())
        return tf.constant(array)


def epoch_permutation(num_examples: int, seed: int, epoch: int) -> tf.Tensor:
    """The example order of an epoch: a stateless shuffle keyed by ``(seed, epoch)``."""
    return tf.random.experimental.stateless_shuffle(
        tf.range(num_examples, dtype=tf.int64), seed=tf.constant([seed, epoch], tf.int64)
    )


class EpochData:
    """Training arrays kept as tensors, served epoch by epoch in variable-size batches."""

    def __init__(
        self, x: np.ndarray, y: np.ndarray, seed: int, shuffle: bool = True, augment: bool = False
    ):
        self.num_examples = len(y)
        self.seed = int(seed)
        self.shuffle = shuffle
        self.augment = augment
        self.x = as_tensor(x)  # the arrays' memory, shared with the training-set evaluation
        self.y = as_tensor(y)

    def dataset(
        self, sizes: list[int], epoch: int, skip_batches: int = 0, ratios: list[float] | None = None
    ) -> tf.data.Dataset:
        """Batches of epoch ``epoch`` with the given sizes, starting at batch ``skip_batches``.

        With ``ratios`` (one η/S per batch) elements are ``(x, y, {RATIO_KEY: ratios})``, the
        step's η/S repeated per example so that a ``tf.distribute`` strategy can split it with
        the batch; the model's train step hands it to the
        :class:`~lrbs_tf.core.optimizers.RatioScaledOptimizer`.
        """
        if sum(sizes) != self.num_examples:
            raise ValueError(f"batch sizes sum to {sum(sizes)}, not {self.num_examples}")
        if self.shuffle:
            order = epoch_permutation(self.num_examples, self.seed, epoch)
        else:
            order = tf.range(self.num_examples, dtype=tf.int64)
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        x, y = self.x, self.y
        augment, seed = self.augment, self.seed

        def gather(start, size, *ratio):
            idx = order[start : start + size]
            images = tf.gather(x, idx)
            if augment:
                images = shift_and_flip(
                    images, tf.stack([tf.constant(seed, tf.int64) * 100003 + epoch, start])
                )
            if ratio:
                return images, tf.gather(y, idx), {RATIO_KEY: tf.fill([size], ratio[0])}
            return images, tf.gather(y, idx)

        columns = (starts, np.asarray(sizes, np.int64))
        if ratios is not None:
            if len(ratios) != len(sizes):
                raise ValueError(f"{len(ratios)} ratios for {len(sizes)} batches")
            columns += (np.asarray(ratios, np.float32),)
        ds = tf.data.Dataset.from_tensor_slices(columns).skip(skip_batches)
        ds = ds.map(gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        return ds.prefetch(tf.data.AUTOTUNE).with_options(data_options())


def shift_and_flip(images, seed, pad: int = 4):
    """The standard CIFAR augmentation, per example: zero-pad by ``pad`` pixels, crop back at
    a random offset (a shift of up to ±pad) and flip horizontally with probability ½.

    Stateless: the same ``seed`` (here: run seed, epoch and batch start) gives the same
    augmentation, so a resumed epoch sees exactly the images it would have seen.
    """
    shape = tf.shape(images)
    n, h, w = shape[0], shape[1], shape[2]
    padded = tf.pad(images, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
    offsets = tf.random.stateless_uniform(
        [n, 2], seed=seed, minval=0, maxval=2 * pad + 1, dtype=tf.int32
    )
    rows = offsets[:, :1] + tf.range(h)[None, :]
    cols = offsets[:, 1:] + tf.range(w)[None, :]
    out = tf.gather(padded, rows, axis=1, batch_dims=1)
    out = tf.gather(out, cols, axis=2, batch_dims=1)
    flip = tf.random.stateless_uniform([n], seed=seed + 1) < 0.5
    return tf.where(flip[:, None, None, None], tf.reverse(out, axis=[2]), out)


def eval_dataset(x: np.ndarray, y: np.ndarray, batch_size: int = 1000) -> tf.data.Dataset:
    """Fixed-order, fixed-size batches for evaluation, sliced from the arrays' memory
    (:func:`as_tensor`; ``from_tensor_slices`` would copy them into the dataset)."""
    x, y = as_tensor(x), as_tensor(y)
    n = int(y.shape[0])

    def batch(start):
        return x[start : start + batch_size], y[start : start + batch_size]

    ds = tf.data.Dataset.range(0, n, batch_size).map(batch)
    return ds.prefetch(tf.data.AUTOTUNE).with_options(data_options())
