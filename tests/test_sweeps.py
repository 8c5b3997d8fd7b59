"""Sweeps over η/S with keras-tuner: the HyperModel, the Fig. 3 grid, resume, divergence,
HParams, and keras-tuner's distributed mode on 127.0.0.1."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from lrbs_tf.training.config import RunConfig
from lrbs_tf.training.tensorboard import read_scalars
from tests.helpers import ROOT, needs_fmnist, run_script

pytestmark = needs_fmnist
TINY = [
    "--train-size",
    "1000",
    "--validation-size",
    "500",
    "--epochs",
    "2",
    "--width",
    "32",
    "--probe-examples",
    "300",
    "--probe-noise-examples",
    "100",
    "--no-loss-target",
]


def test_hypermodel_trains_with_the_given_lr_and_batch(tmp_path):
    from lrbs_tf.sweeps.tuning import RatioHyperModel, make_tuner

    base = RunConfig(
        lr=0.1,
        batch_size=100,
        epochs=1,
        train_size=600,
        validation_size=500,
        width=16,
        logdir=str(tmp_path / "runs"),
    )
    hypermodel = RatioHyperModel(
        base, space="ratio", ratio_range=(1e-4, 1e-3), batch_sizes=[60, 200]
    )
    tuner = make_tuner(hypermodel, "random", str(tmp_path / "kt"), "p", max_trials=2, seed=3)
    tuner.search(verbose=0)
    trials = tuner.oracle.get_best_trials(2)
    assert len(trials) == 2
    for trial in trials:
        hp = trial.hyperparameters.values
        config = hypermodel.config_for(trial.hyperparameters)
        assert config.batch_size == hp["batch_size"]
        assert config.lr == pytest.approx(hp["ratio"] * hp["batch_size"])
        steps = read_scalars(os.path.join(config.run_dir, "tb", "train"))
        sizes = [v for _, v in steps["step/batch_size"]]
        expected = [float(hp["batch_size"])] * (600 // hp["batch_size"])
        if 600 % hp["batch_size"]:
            expected.append(float(600 % hp["batch_size"]))
        assert sizes == expected
        lrs = np.array([v for _, v in steps["step/lr"]])
        np.testing.assert_allclose(lrs, np.float32(hp["ratio"]) * np.float32(sizes), rtol=1e-6)
        metrics = trial.metrics.get_last_value("val_accuracy")
        results = json.load(open(os.path.join(config.run_dir, "results.json")))
        assert metrics == pytest.approx(results["final_validation_accuracy"])


def test_fig3_grid_end_to_end_with_resume_and_divergence(tmp_path):
    logdir = tmp_path / "grid"
    args = [
        "experiments/fig3_grid.py",
        "--lrs",
        "0.05,1e6",
        "--batch-sizes",
        "100",
        *TINY,
        "--logdir",
        logdir,
    ]
    # A sitting of --max-minutes stops at a run boundary, writes no report, says how to go on.
    paused = run_script(*args, "--max-minutes", "0.0001", timeout=600)
    assert paused.returncode == 0, paused.stderr[-3000:]
    assert "paused: --max-minutes 0.0001 reached after" in paused.stderr
    assert "run the same command to continue" in paused.stderr
    assert not (logdir / "fig3.json").exists()
    proc = run_script(*args, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.load(open(logdir / "fig3.json"))
    by_lr = {r["lr"]: r for r in report["runs"]}
    assert by_lr[0.05]["status"] == "finished" and by_lr[1e6]["status"] == "diverged"
    ok = by_lr[0.05]
    for key in ("lambda_max", "frobenius", "frobenius_fd", "trace", "validation_accuracy"):
        assert ok[key] is not None and np.isfinite(ok[key]), key
    assert (logdir / "fig3.png").stat().st_size > 20000 and (logdir / "fig3.csv").exists()
    assert "Spearman" in proc.stdout and "λ_max" in proc.stdout
    # HParams: the experiment at the top, one session per run.
    from tensorboard.backend.event_processing import event_accumulator as ea

    top = ea.EventAccumulator(str(logdir / "hparams"))
    top.Reload()
    assert "_hparams_/experiment" in top.Tags()["tensors"]
    session = ea.EventAccumulator(os.path.join(ok["run_dir"], "tb"))
    session.Reload()
    assert "_hparams_/session_start_info" in session.Tags()["tensors"]

    # A run folder damaged by hand stops the sweep with a message, and nothing is deleted.
    finished_at = json.load(open(os.path.join(ok["run_dir"], "results.json")))["wall_time"]
    diverged_dir = by_lr[1e6]["run_dir"]
    os.remove(os.path.join(diverged_dir, "results.json"))
    refused = run_script(*args, timeout=600)
    assert refused.returncode == 2 and "is damaged" in refused.stderr.strip().splitlines()[-1]
    assert os.path.exists(os.path.join(diverged_dir, "model.keras"))
    # Rerun after removing that folder: only that run trains again.
    shutil.rmtree(diverged_dir)
    again = run_script(*args, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.load(open(os.path.join(ok["run_dir"], "results.json")))["wall_time"] == finished_at
    assert json.load(open(os.path.join(diverged_dir, "results.json")))["status"] == "diverged"
    assert "(1 already finished)" in again.stderr
    assert again.stderr.count("] η=") == 1 and "[2/2] η=1e+06" in again.stderr  # the one trained


@pytest.mark.slow  # minutes of worker processes; `make test-all` runs it
def test_distributed_grid_runs_each_trial_once(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "tools", "launch_tuner.py"),
            "--workers",
            "2",
            "--timeout",
            "400",
            "--logdir",
            str(tmp_path / "launch"),
            "--",
            "experiments/fig3_grid.py",
            "--lrs",
            "0.05,0.2",
            "--batch-sizes",
            "100,250",
            *TINY,
            "--logdir",
            str(tmp_path / "grid"),
        ],
        capture_output=True,
        text=True,
        timeout=500,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    logs = {
        name: open(tmp_path / "launch" / "launch" / f"{name}.log").read()
        for name in ("chief", "tuner0", "tuner1")
    }
    trained = [
        line.split("] ")[1].split(":")[0]
        for name in ("tuner0", "tuner1")
        for line in logs[name].splitlines()
        if line.startswith("[") and " η=" in line
    ]
    assert sorted(trained) == sorted(
        f"η={lr} S={s} seed=0" for lr in ("0.05", "0.2") for s in (100, 250)
    )
    report = json.load(open(tmp_path / "grid" / "fig3.json"))
    assert [r["status"] for r in report["runs"]] == ["finished"] * 4
    assert all(
        json.load(open(os.path.join(r["run_dir"], "results.json")))["resumed"] == 0
        for r in report["runs"]
    )


def test_worker_without_chief_fails_clearly(tmp_path):
    env = {
        "KERASTUNER_ORACLE_IP": "127.0.0.1",
        "KERASTUNER_ORACLE_PORT": "9",
        "KERASTUNER_TUNER_ID": "tuner0",
    }
    proc = run_script(
        "experiments/fig3_grid.py",
        *TINY,
        "--connect-timeout",
        "2",
        "--logdir",
        tmp_path,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 2 and "cannot reach the keras-tuner chief" in proc.stderr


@pytest.mark.slow  # minutes of worker processes; `make test-all` runs it
def test_tune_cli_trials_run_under_mirrored_strategy(tmp_path):
    """tune.py --strategy mirrored --cpu-devices 2: every trial runs on both logical CPUs with
    η = (η/S)·S for the global S (the model is built in the strategy's scope)."""
    proc = run_script(
        "experiments/tune.py",
        "--trials",
        "2",
        "--epochs",
        "1",
        "--train-size",
        "600",
        "--validation-size",
        "500",
        "--width",
        "32",
        "--batch-sizes",
        "61",
        "--logdir",
        tmp_path,
        "--strategy",
        "mirrored",
        "--cpu-devices",
        "2",
        timeout=400,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    runs = [d for d in os.listdir(tmp_path) if os.path.exists(tmp_path / d / "config.json")]
    assert len(runs) == 2
    for name in runs:
        config = json.load(open(tmp_path / name / "config.json"))
        assert config["distribute"]["replicas"] == 2
        steps = read_scalars(str(tmp_path / name / "tb" / "train"))
        sizes = [v for _, v in steps["step/batch_size"]]
        assert sizes == [61.0] * 9 + [51.0]  # the global batch (31 + 30 per replica)
        ratio = np.float32(config["config"]["ratio"])
        lrs = [v for _, v in steps["step/lr"]]
        np.testing.assert_array_equal(np.float32(lrs), ratio * np.float32(sizes))
