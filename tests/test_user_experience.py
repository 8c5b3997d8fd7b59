"""What a user of the commands sees: entry points, python -m lrbs_tf, flags that explain
themselves, warm-up schedules from the command line, progress messages, quiet figure scripts,
no TensorFlow start-up noise, keras-tuner's own workflow on the HyperModel."""

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.helpers import ROOT, needs_fmnist, run_script

TINY = ["--train-size", "600", "--validation-size", "500", "--width", "16"]
BIN = os.path.dirname(sys.executable)


@pytest.mark.parametrize(
    "command",
    [
        "run",
        "probe",
        "advise",
        "tune",
        "fig1",
        "fig2",
        "fig3",
        "fig4",
        "fig5",
        "theory",
        "stability",
        "scale",
    ],
)
def test_entry_points_and_python_m(command):
    script = os.path.join(BIN, f"lrbs-{command}")
    assert os.access(script, os.X_OK), f"lrbs-{command} is not installed (pip install -e .)"
    proc = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.startswith("usage: lrbs-"), proc.stderr
    proc = subprocess.run(
        [sys.executable, "-m", "lrbs_tf", command, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert proc.returncode == 0 and f"usage: lrbs_tf {command}" in proc.stdout, proc.stderr


def test_python_m_lists_the_commands():
    proc = subprocess.run(
        [sys.executable, "-m", "lrbs_tf"], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert proc.returncode == 2 and "fig3" in proc.stdout and "run " in proc.stdout


def test_flags_list_their_choices_and_the_jit_rule():
    text = run_script("experiments/run.py", "--help", timeout=60).stdout
    flat = " ".join(text.split())
    for names in ("cifar10_synthetic", "tfds:NAME[:CONFIG]", "an .npz", "module:function"):
        assert names in flat, names
    for choices in (
        "{inference,batch}",
        "{float32,float64}",
        "{auto,on,off}",
    ):
        assert choices in text, choices
    assert "at most 8 distinct batch sizes" in text


@pytest.mark.parametrize(
    "script,args",
    [
        ("experiments/run.py", ["--ratio", "0.1/100", "--model", "nope"]),
        ("experiments/fig1_cyclic.py", ["--epochs", "x"]),
        ("experiments/fig3_grid.py", ["--seeds", "-1"]),
        ("experiments/tune.py", ["--trials", "0"]),
        ("tools/probe.py", ["/nonexistent"]),
        ("experiments/stability_check.py", ["--epochs", "0"]),
    ],
)
def test_bad_flags_are_refused_before_tensorflow_loads(script, args, tmp_path):
    tick = time.time()
    proc = run_script(script, *args, timeout=60, cwd=tmp_path)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert time.time() - tick < 6  # importing TensorFlow alone takes longer here


@needs_fmnist
@pytest.mark.parametrize(
    "schedule",
    [
        ["--batch-size", "100", "--lr-schedule", "warmup:1:const:0.1"],
        ["--batch-size", "100", "--lr-schedule", "warmup:1:0.1"],
        ["--ratio", "0.1/100", "--lr-schedule", "warmup:1:const:"],
        ["--lr", "0.1", "--batch-size", "100", "--lr-schedule", "warmup:1:const:"],
        ["--batch-size", "100", "--lr-schedule", "warmup:5:const:0.4"],
    ],
)
def test_warm_up_schedules_from_the_command_line(schedule):
    from lrbs_tf.cli.run import parse_args

    config = parse_args(schedule + TINY)
    plan = config.plan()
    assert plan.ratio_at(0.0) == 0.0  # η starts at 0 and rises linearly
    assert plan.ratio_at(0.5) * plan.batch_at(0.5) == pytest.approx(
        config.lr * 0.5 / (5 if "warmup:5" in schedule[-1] else 1)
    )


@pytest.mark.parametrize(
    "flags,share",
    [
        ([], 1.0),  # no size, error or time limit given: about what training cost
        (["--probe-examples", "5000"], None),  # given, even at its default: as sized
        (["--probe-noise-examples", "100"], None),
        (["--probe-max-seconds", "30"], None),
        (["--probe-rel-error", "0.1"], None),
        (["--probe-time-share", "0.5"], 0.5),
        (["--probe-time-share", "0"], 0.0),
    ],
)
def test_a_probe_given_no_size_costs_about_what_training_did(flags, share):
    from lrbs_tf.cli.run import parse_args

    config = parse_args(["--ratio", "0.1/100", *TINY, "--probe", *flags])
    assert config.probe.time_share == share
    assert parse_args(["--ratio", "0.1/100", *TINY]).probe is None


@needs_fmnist
@pytest.mark.slow  # test_streams runs run.py --probe and checks both streams and the noise
def test_run_shows_progress_and_no_tensorflow_noise(tmp_path):
    proc = run_script(
        "experiments/run.py",
        "--ratio",
        "0.1/100",
        "--epochs",
        "2",
        *TINY,
        "--loss-target",
        "1e-6",
        "--probe",
        "--probe-examples",
        "200",
        "--probe-noise-examples",
        "100",
        "--logdir",
        tmp_path,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "probe: width sharpness" in proc.stderr  # the library's progress, on stderr
    for noise in ("absl::InitializeLog", "cudart_stub", "cuInit", "cpu_feature_guard"):
        assert noise not in proc.stderr, noise
    assert "sharpness  width" in proc.stdout and "step" in proc.stdout


def test_the_noise_filter_drops_exactly_tensorflows_noise():
    from lrbs_tf.cli.common import TF_NOISE

    def dropped(line):
        return any(p.search(line) for p in TF_NOISE)

    retrace = (
        "WARNING:tensorflow:5 out of the last 5 calls to {} triggered tf.function retracing. "
        "Tracing is expensive and the excessive number of tracings could be due to (1) …"
    )
    ours = "<bound method DatasetLoss._sums of <lrbs_tf.training.evaluation.DatasetLoss object>"
    assert dropped(retrace.format(ours))
    assert dropped(retrace.format("<function _write_rows at 0x7f7be9382f20>"))
    assert not dropped(retrace.format("<function train_step at 0x7f7be9382f20>"))  # a user's
    assert dropped("I0000 00:00:1795733813.669355    7358 cudart_stub.cc:31] Could not find cuda")
    assert not dropped("E0000 00:00:1795733820.1 7358 some_op.cc:52] a real error")
    assert not dropped("Traceback (most recent call last):")


@needs_fmnist
@pytest.mark.slow  # keras-tuner's Bayesian oracle; the random search runs in the default suite
def test_bayesian_search_on_a_tiny_space(tmp_path):
    proc = run_script(
        "experiments/tune.py",
        "--algorithm",
        "bayesian",
        "--trials",
        "2",
        "--epochs",
        "1",
        *TINY,
        "--batch-sizes",
        "100,200",
        "--logdir",
        tmp_path,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    best = json.load(open(tmp_path / "best.json"))
    assert best["status"] == "finished" and best["ratio"] > 0


@needs_fmnist
def test_keras_tuner_workflow_on_the_hypermodel(tmp_path):
    import keras_tuner as kt

    from lrbs_tf.models.registry import load_model
    from lrbs_tf.sweeps.tuning import RatioHyperModel, make_tuner
    from lrbs_tf.training.config import RunConfig

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
        base, space="ratio", ratio_range=(1e-4, 1e-3), batch_sizes=[100], progress="none"
    )
    tuner = make_tuner(hypermodel, "random", str(tmp_path / "kt"), "p", max_trials=2)
    tuner.search()
    (best,) = tuner.get_best_models(1)
    trial = tuner.oracle.get_best_trials(1)[0]
    config = hypermodel.config_for(trial.hyperparameters)
    saved = load_model(os.path.join(config.run_dir, "model.keras"), compile=False)
    for a, b in zip(best.get_weights(), saved.get_weights()):
        np.testing.assert_array_equal(a, b)  # the trained weights, not a fresh model
    # Data handed to search() would be ignored: refused, with the reason.
    with pytest.raises(kt.errors.FatalError, match="without x, y"):
        make_tuner(hypermodel, "random", str(tmp_path / "kt2"), "p", max_trials=1).search(
            np.zeros((4, 28, 28, 1)), np.zeros(4)
        )
