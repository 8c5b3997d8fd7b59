"""The per-epoch pipeline: permutations, batch sizes, cardinality, resumable order."""

import numpy as np
import pytest
import tensorflow as tf

from lrbs_tf.core.plan import epoch_batch_sizes
from lrbs_tf.data.pipeline import EpochData


@pytest.mark.parametrize(
    "n,size,expected",
    [
        (10, 4, [4, 4, 2]),
        (8, 4, [4, 4]),
        (3, 5, [3]),
        (1, 1, [1]),
    ],
)
def test_constant_sizes(n, size, expected):
    assert epoch_batch_sizes(n, size, 0) == expected


def test_sizes_follow_progress_function():
    # 100 examples; S = 10 in the first half of every epoch, 30 in the second half.
    sizes = epoch_batch_sizes(100, lambda t: 10 if (t % 1) < 0.5 else 30, 3)
    assert sizes == [10, 10, 10, 10, 10, 30, 20]


def test_bad_size_function():
    with pytest.raises(ValueError, match="gave 0"):
        epoch_batch_sizes(10, lambda t: 0, 0)


def _epoch(data, sizes, epoch, skip=0):
    ds = data.dataset(sizes, epoch, skip_batches=skip)
    return ds, [(x.numpy(), y.numpy()) for x, y in ds]


def test_each_epoch_is_a_fresh_permutation():
    n = 103
    x = np.arange(n, dtype=np.float32)[:, None]
    data = EpochData(x, np.arange(n), seed=5)
    sizes = [10, 50, 10, 33]
    orders = []
    for epoch in range(3):
        ds, batches = _epoch(data, sizes, epoch)
        assert int(ds.cardinality()) == len(sizes)
        assert [len(b[1]) for b in batches] == sizes
        order = np.concatenate([b[1] for b in batches])
        assert sorted(order) == list(range(n))
        np.testing.assert_array_equal(np.concatenate([b[0][:, 0] for b in batches]), order)
        orders.append(order)
    assert not np.array_equal(orders[0], orders[1]) and not np.array_equal(orders[1], orders[2])
    # The same (seed, epoch) gives the same order in a new object; skipping resumes mid-epoch.
    again = EpochData(x, np.arange(n), seed=5)
    _, batches = _epoch(again, sizes, 1, skip=2)
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), orders[1][60:])
    assert tf.data.Dataset.cardinality(again.dataset(sizes, 1, 2)) == 2


def test_sizes_must_cover_the_set():
    data = EpochData(np.zeros((10, 1), np.float32), np.zeros(10), seed=0)
    with pytest.raises(ValueError, match="sum to 9"):
        data.dataset([4, 5], 0)
