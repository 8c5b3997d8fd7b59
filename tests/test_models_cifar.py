"""CIFAR-10 models and data, augmentation, and the loss landscape between models."""

import pickle

import keras
import numpy as np
import pytest
import tensorflow as tf

from lrbs_tf.data import cifar10 as D
from lrbs_tf.data.datasets import load_dataset
from lrbs_tf.data.pipeline import shift_and_flip
from lrbs_tf.models.convnets import VGG11_LAYERS
from lrbs_tf.models.registry import build_model
from lrbs_tf.probes.landscape import interpolate, random_plane, recompute_bn_statistics
from tests.helpers import needs_fmnist, run_script


def trainable(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def test_vgg11_parameter_count():
    # Independent arithmetic: 3×3 convs with bias + BN (γ, β) per conv, Dense(512 → 10).
    expected, channels = 0, 3
    for layer in VGG11_LAYERS:
        if layer == "M":
            continue
        expected += 9 * channels * layer + layer + 2 * layer
        channels = layer
    expected += 512 * 10 + 10
    model = build_model("vgg11", (32, 32, 3), 10, seed=0)
    assert trainable(model) == expected == 9_231_114


def test_resnet_parameter_counts_match_published():
    # He et al. (2016) CIFAR ResNets with option-A shortcuts: 0.27M (n=3), 0.85M (n=9); the
    # exact counts 269,722 and 853,018 are those of the widely used reference implementation
    # (akamaster/pytorch_resnet_cifar10).
    assert (
        trainable(build_model("resnet56", (32, 32, 3), 10, seed=0, blocks_per_stage=3)) == 269_722
    )
    model = build_model("resnet56", (32, 32, 3), 10, seed=0)
    assert trainable(model) == 853_018
    assert sum(isinstance(layer, keras.layers.Conv2D) for layer in model.layers) + 1 == 56


@pytest.mark.parametrize("name", ["vgg11", "resnet56"])
def test_forward_backward_shapes(name):
    model = build_model(name, (32, 32, 3), 10, seed=0)
    x = tf.random.normal([4, 32, 32, 3])
    with tf.GradientTape() as tape:
        logits = model(x, training=True)
        loss = tf.reduce_mean(logits**2)
    grads = tape.gradient(loss, model.trainable_variables)
    assert logits.shape == (4, 10)
    assert all(
        g is not None and g.shape == v.shape for g, v in zip(grads, model.trainable_variables)
    )


def write_cifar_dir(root, per_batch=12, seed=0):
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {
            b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
            b"labels": list(rng.integers(0, 10, per_batch)),
        }
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)
    return folder


def test_cifar_loading_from_pickle_batches(tmp_path):
    folder = write_cifar_dir(tmp_path)
    data = D.load_cifar10(str(tmp_path), validation_size=10, seed=1)
    assert (len(data.train), len(data.validation), len(data.test)) == (50, 10, 12)
    assert data.train.x.shape == (50, 32, 32, 3) and data.info["synthetic"] is False
    np.testing.assert_allclose(data.train.x.mean(axis=(0, 1, 2)), 0, atol=1e-5)
    np.testing.assert_allclose(data.train.x.std(axis=(0, 1, 2)), 1, atol=1e-4)
    # The channel layout: the first 1024 bytes are red.
    raw = pickle.load(open(folder / "test_batch", "rb"), encoding="bytes")[b"data"][0]
    image = data.test.x[0] * np.array(data.info["channel_std"]) + np.array(
        data.info["channel_mean"]
    )
    np.testing.assert_allclose(image[..., 0].ravel() * 255, raw[:1024], atol=1e-3)


def test_corrupt_cifar_batch(tmp_path):
    folder = write_cifar_dir(tmp_path)
    (folder / "data_batch_3").write_bytes(b"\x80\x04 truncated")
    with pytest.raises(D.DataError, match="data_batch_3"):
        D.load_cifar10(str(tmp_path), validation_size=10)


def test_missing_cifar_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
    with pytest.raises(D.DataError, match="cifar-10-python.tar.gz"):
        D._load_cifar10_arrays(str(tmp_path / "empty"))


def test_synthetic_stand_in_is_labelled():
    data = load_dataset("cifar10_synthetic", seed=0)
    assert data.name == "cifar10_synthetic" and "SYNTHETIC" in data.info["source"]
    assert data.train.x.shape[1:] == (32, 32, 3) and len(data.validation) == 500


def test_augmentation_shifts_and_flips_only():
    images = tf.random.normal([16, 32, 32, 3], seed=1)
    out = shift_and_flip(images, tf.constant([3, 4], tf.int64))
    assert out.shape == images.shape
    again = shift_and_flip(images, tf.constant([3, 4], tf.int64))
    np.testing.assert_array_equal(out.numpy(), again.numpy())  # stateless
    padded = np.pad(images.numpy(), [(0, 0), (4, 4), (4, 4), (0, 0)])
    for i in range(16):
        candidates = [padded[i, r : r + 32, c : c + 32] for r in range(9) for c in range(9)]
        candidates += [c[:, ::-1] for c in candidates]
        assert any(np.array_equal(out[i].numpy(), c) for c in candidates)


def test_augmented_pipeline_keeps_labels():
    from lrbs_tf.data.pipeline import EpochData

    x = np.random.rand(40, 32, 32, 3).astype(np.float32)
    y = np.arange(40)
    data = EpochData(x, y, seed=0, augment=True)
    for xb, yb in data.dataset([16, 16, 8], 0):
        assert xb.shape[1:] == (32, 32, 3)
        # the label still belongs to the image: the centre region is a shift of the original
        for img, label in zip(xb.numpy(), yb.numpy()):
            src = x[label]
            assert np.isclose(np.abs(img).sum(), 0) or any(
                np.allclose(img[8:24, 8:24], s[8 + dr : 24 + dr, 8 + dc : 24 + dc])
                for s in (src, src[:, ::-1])
                for dr in range(-4, 5)
                for dc in range(-4, 5)
            )


def _two_models():
    a = build_model("mlp", (6,), 3, seed=1, width=8, depth=2)
    b = build_model("mlp", (6,), 3, seed=2, width=8, depth=2)
    x = np.random.default_rng(0).normal(size=(64, 6)).astype(np.float32)
    y = np.random.default_rng(1).integers(0, 3, 64)
    for m in (a, b):
        recompute_bn_statistics(m, x * (1.5 if m is b else 1.0), batch_size=16)
    return a, b, x, y


def _loss(model, x, y):
    logits = model(x, training=False)
    return float(tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits)))


def test_interpolation_endpoints_reproduce_each_model():
    a, b, x, y = _two_models()
    before = [w.numpy().copy() for w in a.weights + b.weights]
    curve = interpolate(
        a, b, (x, y), (x, y), alphas=[0.0, 0.5, 1.0], bn="interpolate", batch_size=64
    )
    assert curve["train_loss"][0] == pytest.approx(_loss(a, x, y), rel=1e-6)
    assert curve["train_loss"][2] == pytest.approx(_loss(b, x, y), rel=1e-6)
    rec = interpolate(
        a,
        b,
        (x, y),
        (x, y),
        alphas=[0.0, 1.0],
        bn="recompute",
        recompute_examples=64,
        batch_size=64,
    )
    for model, value in ((a, rec["train_loss"][0]), (b, rec["train_loss"][1])):
        copy = keras.models.clone_model(model)
        copy.set_weights(model.get_weights())
        recompute_bn_statistics(copy, x[:64])
        assert value == pytest.approx(_loss(copy, x, y), rel=1e-6)
    after = [w.numpy() for w in a.weights + b.weights]
    assert all(np.array_equal(p, q) for p, q in zip(before, after))
    plane = random_plane(a, (x, y), points=3, batch_size=64)
    assert plane["loss"][1][1] == pytest.approx(_loss(a, x, y), rel=1e-6)


@needs_fmnist
# Slow (30 s and minutes): the run loop is the MLP's; the models' shapes and parameter counts
# are tested above. `make test-all` runs both.
@pytest.mark.slow
@pytest.mark.parametrize("model", ["vgg11", "resnet56"])
def test_short_real_run_on_the_stand_in(model, tmp_path):
    proc = run_script(
        "experiments/run.py",
        "--model",
        model,
        "--dataset",
        "cifar10_synthetic",
        "--ratio",
        "0.05/64",
        "--epochs",
        "1",
        "--train-size",
        "192",
        "--validation-size",
        "100",
        "--augment",
        "--logdir",
        tmp_path,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    import json

    results = json.load(open(next(tmp_path.iterdir()) / "results.json"))
    config = json.load(open(next(tmp_path.iterdir()) / "config.json"))
    assert results["status"] == "finished" and config["data"]["synthetic"] is True
    assert "SYNTHETIC" in config["data"]["source"] and np.isfinite(results["final_train_loss"])
