"""The data order of a scaling test: one stream of examples per data order, cut into batches.

The stream of order ``seed`` is epoch 0's permutation of the training set, then epoch 1's, …
(:func:`lrbs_tf.data.pipeline.epoch_permutation`, served by
:class:`~lrbs_tf.data.pipeline.EpochData`), each cut to the ``usable`` examples of its epoch
(a whole number of blocks, the same for every branch). A branch with batches of S takes the
stream S examples at a time, so a batch of k·S0 is exactly the union of k consecutive batches
of S0, and no batch crosses an epoch. SVAG (:mod:`lrbs_tf.scaling.svag`) takes it in pairs of
consecutive batches of S0: two independent batches per step.
"""

from __future__ import annotations

import tensorflow as tf

from lrbs_tf.data.pipeline import EpochData


def usable(num_train: int, block: int) -> int:
    """Examples of each epoch a test uses: whole blocks (the same tail is left out of each)."""
    return num_train // block * block


def batches(train: EpochData, batch: int, block: int, first: int, count: int) -> tf.data.Dataset:
    """Batches ``first … first + count − 1`` of ``batch`` examples of the stream of ``train``
    (its seed is the data order); ``block`` is the test's block (a multiple of ``batch``)."""
    n = train.num_examples
    per_epoch = usable(n, block) // batch
    if per_epoch < 1 or block % batch:
        raise ValueError(f"batches of {batch} do not tile blocks of {block} within N = {n}")
    sizes = [batch] * (n // batch) + ([n % batch] if n % batch else [])
    pieces, index, left = [], first, count
    while left > 0:
        epoch, within = divmod(index, per_epoch)
        take = min(left, per_epoch - within)
        pieces.append(train.dataset(sizes, epoch, skip_batches=within).take(take))
        index, left = index + take, left - take
    out = pieces[0]
    for piece in pieces[1:]:
        out = out.concatenate(piece)
    return out.apply(tf.data.experimental.assert_cardinality(count))


def pairs(train: EpochData, batch: int, block: int, first: int, count: int) -> tf.data.Dataset:
    """Steps ``first … first + count − 1`` of SVAG: each the next two batches of ``batch`` of
    the stream, as ``(x, y)`` with a leading axis of 2 (the two batches)."""
    out = batches(train, batch, block, 2 * first, 2 * count).batch(2, drop_remainder=True)
    return out.apply(tf.data.experimental.assert_cardinality(count))
