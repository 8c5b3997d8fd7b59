"""Fashion-MNIST idx loading: search order, splits, and clear errors for bad files."""

import gzip
import os
import re
import struct

import numpy as np
import pytest

from lrbs_tf.data import fashion_mnist as D
from tests.helpers import needs_fmnist


def write_idx(path, array, compress=True, magic=None):
    array = np.asarray(array, np.uint8)
    header = struct.pack(
        f">{1 + array.ndim}I", magic or (2051 if array.ndim == 3 else 2049), *array.shape
    )
    raw = header + array.tobytes()
    with (gzip.open if compress else open)(path, "wb") as f:
        f.write(raw)


def make_fmnist_dir(root, n_train=40, n_test=12, seed=0, compress=True):
    rng = np.random.default_rng(seed)
    os.makedirs(root, exist_ok=True)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, 28, 28)),
        "train_labels": rng.integers(0, 10, n_train),
        "test_images": rng.integers(0, 256, (n_test, 28, 28)),
        "test_labels": rng.integers(0, 10, n_test),
    }
    suffix = ".gz" if compress else ""
    for key, stem in D.FASHION_MNIST_FILES.items():
        write_idx(os.path.join(root, stem + suffix), arrays[key], compress)
    return arrays


@pytest.fixture
def no_env(monkeypatch):
    monkeypatch.delenv(D.ENV_DATA_DIR, raising=False)
    monkeypatch.setattr(D, "DEBIAN_FASHION_MNIST", "/nonexistent/fashion-mnist")


@pytest.mark.parametrize("compress", [True, False])
def test_loads_idx_directory_with_splits(tmp_path, no_env, compress):
    arrays = make_fmnist_dir(tmp_path, compress=compress)
    data = D.load_fashion_mnist(str(tmp_path), validation_size=10, seed=3, allow_download=False)
    assert (len(data.train), len(data.validation), len(data.test)) == (30, 10, 12)
    assert data.train.x.shape == (30, 28, 28, 1) and data.train.x.dtype == np.float32
    assert 0.0 <= data.train.x.min() and data.train.x.max() <= 1.0
    # Train and validation are disjoint and together the whole training file.
    order = np.random.default_rng(3).permutation(40)
    np.testing.assert_array_equal(data.validation.y, arrays["train_labels"][order[:10]])
    np.testing.assert_array_equal(data.train.y, arrays["train_labels"][order[10:]])
    np.testing.assert_array_equal(data.test.x[..., 0] * 255, arrays["test_images"])
    assert data.info["source"].startswith("idx files in") and "--data-dir" in data.info["source"]
    assert data.info["validation_size"] == 10 and data.info["split_seed"] == 3


def test_train_size_subset_and_seed(tmp_path, no_env):
    make_fmnist_dir(tmp_path)
    a = D.load_fashion_mnist(
        str(tmp_path), validation_size=10, train_size=7, seed=1, allow_download=False
    )
    b = D.load_fashion_mnist(
        str(tmp_path), validation_size=10, train_size=7, seed=1, allow_download=False
    )
    c = D.load_fashion_mnist(
        str(tmp_path), validation_size=10, train_size=7, seed=2, allow_download=False
    )
    assert len(a.train) == 7
    np.testing.assert_array_equal(a.train.x, b.train.x)
    assert a.info["train_fingerprint"] == b.info["train_fingerprint"] != c.info["train_fingerprint"]


def test_search_order_env_then_debian(tmp_path, monkeypatch):
    env_dir, deb_dir, cli_dir = tmp_path / "env", tmp_path / "deb", tmp_path / "cli"
    make_fmnist_dir(env_dir, seed=1)
    make_fmnist_dir(deb_dir, seed=2)
    make_fmnist_dir(cli_dir, seed=3)
    monkeypatch.setattr(D, "DEBIAN_FASHION_MNIST", str(deb_dir))
    monkeypatch.setenv(D.ENV_DATA_DIR, str(env_dir))
    kw = dict(validation_size=10, allow_download=False)
    assert "--data-dir" in D.load_fashion_mnist(str(cli_dir), **kw).source
    assert "LRBS_DATA_DIR" in D.load_fashion_mnist(None, **kw).source
    monkeypatch.delenv(D.ENV_DATA_DIR)
    assert "Debian" in D.load_fashion_mnist(None, **kw).source


@pytest.mark.parametrize(
    "files,fragment",
    [
        (None, "is not a folder"),  # --data-dir /nonexistent
        (["train-images-idx3-ubyte.gz"], "lacks train-images-idx3-ubyte.gz"),
        ([], "searched --data-dir"),  # no idx files: tensorflow-datasets there, no fallback
    ],
)
def test_an_explicit_data_dir_is_used_or_refused(tmp_path, monkeypatch, files, fragment):
    deb_dir, cli_dir = tmp_path / "deb", tmp_path / "cli"
    make_fmnist_dir(deb_dir, seed=2)
    monkeypatch.setattr(D, "DEBIAN_FASHION_MNIST", str(deb_dir))
    monkeypatch.delenv(D.ENV_DATA_DIR, raising=False)
    if files is not None:
        make_fmnist_dir(cli_dir)
        for name in files:
            (cli_dir / name).unlink()
        if not files:
            for path in cli_dir.iterdir():
                path.unlink()
    with pytest.raises(D.DataError, match=fragment) as err:
        D.load_fashion_mnist(str(cli_dir), validation_size=10, allow_download=False)
    assert "Debian" not in str(err.value).split("Fix:")[0]  # never fell back to another copy
    monkeypatch.setenv(D.ENV_DATA_DIR, str(cli_dir))  # the same holds for $LRBS_DATA_DIR
    with pytest.raises(
        D.DataError, match=re.escape(fragment.replace("--data-dir", "$LRBS_DATA_DIR"))
    ):
        D.load_fashion_mnist(None, validation_size=10, allow_download=False)


def test_missing_everywhere_names_every_place(no_env):
    with pytest.raises(D.DataError) as err:
        D.load_fashion_mnist(None, allow_download=False)
    message = str(err.value)
    assert "/nonexistent/fashion-mnist" in message
    assert "apt-get install dataset-fashion-mnist" in message and "--data-dir" in message
    assert "\n" not in message


def test_truncated_gzip(tmp_path, no_env):
    make_fmnist_dir(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(D.DataError, match="train-images-idx3-ubyte.gz"):
        D.load_fashion_mnist(str(tmp_path), validation_size=10, allow_download=False)


def test_not_gzip(tmp_path, no_env):
    make_fmnist_dir(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(b"this is not gzip at all")
    with pytest.raises(D.DataError, match="t10k-labels"):
        D.load_fashion_mnist(str(tmp_path), validation_size=10, allow_download=False)


def test_wrong_magic(tmp_path, no_env):
    make_fmnist_dir(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(40), magic=1234)
    with pytest.raises(D.DataError, match="magic 1234"):
        D.load_fashion_mnist(str(tmp_path), validation_size=10, allow_download=False)


def test_short_payload(tmp_path, no_env):
    make_fmnist_dir(tmp_path)
    raw = struct.pack(">4I", 2051, 40, 28, 28) + bytes(100)
    with gzip.open(tmp_path / "train-images-idx3-ubyte.gz", "wb") as f:
        f.write(raw)
    with pytest.raises(D.DataError, match="truncated or corrupt"):
        D.load_fashion_mnist(str(tmp_path), validation_size=10, allow_download=False)


def test_mismatched_labels(tmp_path, no_env):
    make_fmnist_dir(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(39))
    with pytest.raises(D.DataError, match="do not form"):
        D.load_fashion_mnist(str(tmp_path), validation_size=10, allow_download=False)


@needs_fmnist
def test_real_fashion_mnist_sizes():
    data = D.load_fashion_mnist(D.DEBIAN_FASHION_MNIST)
    assert (len(data.train), len(data.validation), len(data.test)) == (50000, 10000, 10000)
    assert sorted(np.unique(data.test.y)) == list(range(10))
