"""Short real training runs on a Fashion-MNIST subset: run folder, TensorBoard, divergence, seeds."""
import json
import os

import numpy as np
import pytest

from conftest import needs_fmnist, run_script
from lrbs_tf.config import RunConfig
from lrbs_tf.summaries import read_scalars
from lrbs_tf.train import RunExistsError, train

pytestmark = needs_fmnist


def small(tmp_path, **overrides):
    settings = dict(lr=0.05, batch_size=64, epochs=2, train_size=1000, validation_size=500,
                    width=32, logdir=str(tmp_path), eval_batch_size=500, jit_compile="off")
    settings.update(overrides)
    return RunConfig(**settings)


def test_run_folder_results_and_tensorboard(tmp_path):
    config = small(tmp_path)
    results = train(config)
    run_dir = config.run_dir
    saved = json.load(open(os.path.join(run_dir, "results.json")))
    assert saved["status"] == "finished" and not saved["diverged"]
    assert [e["epoch"] for e in saved["epochs"]] == [1, 2]
    for record in saved["epochs"]:
        assert record["steps"] == 16  # 15 × 64 + 40
        for key in ("train_loss", "train_accuracy", "validation_loss", "validation_accuracy",
                    "test_loss", "test_accuracy"):
            assert np.isfinite(record[key]), key
    assert saved["final_test_accuracy"] == results["final_test_accuracy"] > 0.5
    assert saved["examples_per_second"] > 0 and saved["wall_time"] > 0
    cfg = json.load(open(os.path.join(run_dir, "config.json")))
    assert cfg["config"]["lr"] == 0.05 and cfg["config"]["batch_size"] == 64
    assert cfg["config"]["ratio"] == pytest.approx(0.05 / 64)
    assert cfg["data"]["train_size"] == 1000 and cfg["data"]["validation_size"] == 500
    assert cfg["versions"]["tensorflow"] and cfg["versions"]["keras"].startswith("3.")
    assert cfg["deterministic"] is False
    assert os.path.exists(os.path.join(run_dir, "model.keras"))

    steps = read_scalars(os.path.join(run_dir, "tb", "train"))
    sizes = [v for _, v in steps["step/batch_size"]]
    assert [s for s, _ in steps["step/batch_size"]] == list(range(1, 33))
    assert sizes == ([64.0] * 15 + [40.0]) * 2
    lrs = np.array([v for _, v in steps["step/lr"]])
    np.testing.assert_allclose(lrs, np.float32(0.05 / 64) * np.array(sizes, np.float32), rtol=1e-6)
    np.testing.assert_allclose([v for _, v in steps["step/ratio_x1e6"]], 0.05 / 64 * 1e6, rtol=1e-5)
    losses = [v for _, v in steps["step/loss"]]
    assert all(np.isfinite(losses)) and np.mean(losses[-8:]) < np.mean(losses[:8])
    # The mean of the batch losses weighted by size is Keras' epoch loss.
    first = np.dot(losses[:16], sizes[:16]) / 1000
    assert first == pytest.approx(saved["epochs"][0]["train_loss"], rel=1e-4)
    for split in ("train", "validation", "test"):
        epochs = read_scalars(os.path.join(run_dir, "tb", split))
        assert [s for s, _ in epochs["epoch_accuracy"]] == [1, 2]
    test_acc = [v for _, v in read_scalars(os.path.join(run_dir, "tb", "test"))["epoch_accuracy"]]
    assert test_acc[-1] == pytest.approx(saved["final_test_accuracy"])


def test_existing_run_folder_is_kept(tmp_path):
    config = small(tmp_path, epochs=1)
    train(config)
    with pytest.raises(RunExistsError, match="--overwrite"):
        train(config)
    config.overwrite = True
    assert train(config)["status"] == "finished"


def test_same_seed_same_numbers(tmp_path):
    a = train(small(tmp_path, name="a", seed=7))
    b = train(small(tmp_path, name="b", seed=7))
    c = train(small(tmp_path, name="c", seed=8))
    assert a["weights_sha1"] == b["weights_sha1"] != c["weights_sha1"]
    strip = lambda r: [{k: v for k, v in e.items() if k != "wall_time"} for e in r["epochs"]]  # noqa: E731
    assert strip(a) == strip(b)


def test_divergence_via_cli(tmp_path):
    proc = run_script("experiments/run.py", "--ratio", "1e6/64", "--train-size", "1000",
                      "--validation-size", "500", "--epochs", "3", "--width", "16",
                      "--logdir", tmp_path, "--name", "huge", timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "diverged" in proc.stdout
    results = json.load(open(tmp_path / "huge" / "results.json"))
    assert results["status"] == "diverged" and results["diverged"] is True
    assert results["diverged_epoch"] == 1 and len(results["epochs"]) == 1
