"""The equal-loss rule of Fig. 3: the training-set loss at the weights (BatchNorm in inference
mode), the stop at the first check that reaches the target, and capped runs in the tables."""

import json
import os

import keras
import numpy as np
import pytest

from lrbs_tf.models.registry import build_model
from lrbs_tf.training.config import RunConfig
from lrbs_tf.training.evaluation import DatasetLoss
from lrbs_tf.training.fitting import compile_model
from tests.helpers import needs_fmnist


def test_dataset_loss_equals_keras_evaluate_in_inference_mode():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1234, 6, 6, 1)).astype(np.float32)
    y = rng.integers(0, 10, 1234).astype(np.int32)
    model = build_model("mlp", (6, 6, 1), 10, seed=1, width=16)
    compile_model(model, ratio=0.5 / 64)
    model.fit(x, y, batch_size=64, epochs=2, verbose=0)  # BatchNorm moving stats move off init
    evaluator = DatasetLoss(model, x, y, chunk=500)  # 3 chunks, the last one ragged
    got = evaluator()
    want = model.evaluate(x, y, batch_size=97, verbose=0, return_dict=True)
    assert got["loss"] == pytest.approx(want["loss"], rel=1e-5)
    assert got["accuracy"] == pytest.approx(want["accuracy"], abs=1e-7)
    logits = model.predict(x, verbose=0)  # inference mode, independently of both
    direct = keras.ops.convert_to_numpy(
        keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)
    ).mean()
    assert got["loss"] == pytest.approx(float(direct), rel=1e-5)
    model.fit(x, y, batch_size=64, epochs=1, verbose=0)
    assert evaluator()["loss"] != got["loss"]  # reads the current weights
    assert evaluator.trace_count() == 1  # one compiled pass, traced once


def _config(tmp_path, **overrides):
    settings = dict(
        lr=0.05,
        batch_size=64,
        epochs=4,
        train_size=1000,
        validation_size=500,
        width=32,
        logdir=str(tmp_path),
        eval_batch_size=500,
        jit_compile="off",
        deterministic=True,
    )
    settings.update(overrides)
    return RunConfig(**settings)


@needs_fmnist
def test_a_run_stops_at_the_first_check_that_reaches_the_target(tmp_path):
    from lrbs_tf.data.datasets import load_dataset
    from lrbs_tf.training.evaluation import DatasetLoss
    from lrbs_tf.training.run import train

    capped = train(_config(tmp_path, name="capped", loss_target=1e-9))
    losses = [e["weights_loss"] for e in capped["epochs"]]
    assert len(losses) == 4 and capped["loss_target_reached"] is False
    assert capped["final_weights_loss"] == losses[-1]
    # A target between the losses after epochs 1 and 2 stops the same run after epoch 2.
    assert losses[1] < losses[0]
    target = (losses[0] + losses[1]) / 2
    stopped = train(_config(tmp_path, name="stopped", loss_target=target))
    assert stopped["loss_target_reached"] is True and stopped["loss_target_epoch"] == 2
    assert len(stopped["epochs"]) == 2
    assert stopped["epochs"][0]["weights_loss"] == losses[0]  # the same run up to there
    # Epoch 1 ended within twice the target, so epoch 2 was also checked every 4 of its 16
    # steps; the run stopped at the first check at or below the target.
    last = stopped["epochs"][-1]
    assert last["steps"] in (4, 8, 12, 16)
    if last["steps"] == 16:
        assert stopped["final_weights_loss"] == pytest.approx(losses[1], rel=1e-6)
    else:
        assert last["fraction"] == pytest.approx(last["steps"] * 64 / 1000)
        assert stopped["epochs_trained"] == pytest.approx(1 + last["fraction"])
    assert stopped["final_weights_loss"] == stopped["loss_reached"] <= target
    # The recorded loss is the loss of the saved model over the training set.
    run_dir = os.path.join(str(tmp_path), "stopped")
    model = keras.models.load_model(os.path.join(run_dir, "model.keras"))
    data = load_dataset("fashion_mnist", validation_size=500, train_size=1000, seed=0)
    again = DatasetLoss(model, data.train.x, data.train.y)()
    assert again["loss"] == pytest.approx(stopped["final_weights_loss"], rel=1e-5)
    assert again["accuracy"] == pytest.approx(stopped["final_weights_accuracy"])
    saved = json.load(open(os.path.join(run_dir, "results.json")))
    assert saved["final_weights_loss"] == stopped["final_weights_loss"]


@needs_fmnist
def test_every_finished_run_records_its_final_weights_loss(tmp_path):
    from lrbs_tf.training.run import train

    results = train(_config(tmp_path, epochs=1, deterministic=False))
    assert "weights_loss" not in results["epochs"][0]  # only a loss target checks each epoch
    assert 0 < results["final_weights_loss"] < 2.5
    assert 0 < results["final_weights_accuracy"] <= 1


def test_stop_at_loss_checks_every_k_steps_and_stops_at_the_first_hit():
    from lrbs_tf.training.callbacks import StopAtLoss

    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 4, 4, 1)).astype(np.float32)
    y = rng.integers(0, 10, 40).astype(np.int32)
    model = build_model("mlp", (4, 4, 1), 10, seed=1, width=8)
    compile_model(model, ratio=0.1 / 4, steps_per_execution=1)
    values, calls = iter([0.9, 0.6, 0.3, 0.1]), []

    def loss_at_weights():
        calls.append(int(model.optimizer.iterations.numpy()))
        return {"loss": next(values)}

    check = StopAtLoss(loss_at_weights, target=0.5, every=3)
    model.fit(x, y, batch_size=4, epochs=1, verbose=0, shuffle=False, callbacks=[check])
    assert calls == [3, 6, 9]  # 10 steps: checks after steps 3, 6 and 9; 0.3 stops it
    assert int(model.optimizer.iterations.numpy()) == 9
    assert check.reached == {"loss": 0.3}


def _row(lr, batch, lam, converged=True, status="finished", seed=0):
    return {
        "lr": lr,
        "batch_size": batch,
        "ratio": lr / batch,
        "seed": seed,
        "status": status,
        "converged": converged,
        "lambda_max": lam,
        "frobenius": lam * 2,
        "validation_accuracy": 0.9,
        "final_weights_loss": 0.05,
    }


def test_a_capped_run_is_hollow_and_left_out_of_the_correlations(tmp_path):
    from matplotlib.image import imread

    from lrbs_tf.figures.plots import fig3_figure, fig3_plot
    from lrbs_tf.sweeps import tables as sweep

    rows = [
        _row(0.01, 1000, 500.0),
        _row(0.1, 1000, 150.0),
        _row(0.1, 100, 30.0),
        _row(0.1, 50, 14.0),
        _row(0.1, 25, 900.0, converged=False),
    ]
    rho = sweep.spearman(rows, ["lambda_max"])["lambda_max"]
    assert rho["n"] == 4 and rho["rho"] == pytest.approx(-1.0)  # the capped run would break it
    assert (
        sweep.spearman([dict(r, converged=None) for r in rows], ["lambda_max"])["lambda_max"]["n"]
        == 5
    )  # no target: all count
    by_point = {(p["lr"], p["batch_size"]): p for p in sweep.points(rows, "lambda_max")}
    assert by_point[(0.1, 25)]["hollow"] and not by_point[(0.1, 50)]["hollow"]
    assert sweep.decades(rows, "lambda_max") == pytest.approx(np.log10(500 / 14))
    # Two seeds of a point: the mean with min–max bars; one capped seed makes it hollow.
    two = [_row(0.1, 50, 10.0), _row(0.1, 50, 20.0, converged=False, seed=1)]
    (point,) = sweep.points(two, "lambda_max")
    assert (point["mean"], point["low"], point["high"], point["hollow"]) == (15.0, 10.0, 20.0, True)
    path = fig3_plot(
        rows,
        sweep.spearman(rows, ["lambda_max"]),
        str(tmp_path / "f.png"),
        "test",
        loss_target=0.05,
    )
    assert imread(path).shape[0] > 500
    # In the λ_max panel the capped point (S = 25) is drawn without a face colour.
    from matplotlib.collections import PathCollection

    fig = fig3_figure(rows, sweep.spearman(rows, ["lambda_max"]), "test", 0.05)
    faces = {
        round(float(c.get_offsets()[0][0]), 9): c.get_facecolors()
        for c in fig.axes[0].collections
        if isinstance(c, PathCollection)
    }
    assert len(faces[round(0.1 / 25, 9)]) == 0  # hollow
    assert faces[round(0.1 / 50, 9)][0][3] == 1  # filled
