"""Hostile input across the command-line tools: one line on stderr, exit status 2, no traceback,
no files; corrupt run folders are refused with a clear message."""

import json

import pytest

from tests.helpers import run_script

CASES = [
    # script, arguments, a fragment of the message
    ("experiments/fig1_cyclic.py", ["--stage", "-4"], "--stage"),
    ("experiments/fig1_cyclic.py", ["--train-size", "0"], "--train-size"),
    ("experiments/fig1_cyclic.py", ["--epochs", "x"], "invalid int"),
    ("experiments/fig1_cyclic.py", ["--model", "nope"], "--model names an unknown model 'nope'"),
    ("experiments/fig1_cyclic.py", ["--train-size", "100"], "larger than the training set"),
    ("experiments/fig2_rescaling.py", ["--base", "0.1/50/2"], "too many"),
    ("experiments/fig2_rescaling.py", ["--base", "abc"], "number"),
    ("experiments/fig2_rescaling.py", ["--rules", "linear,"], "rescale rule"),
    ("experiments/fig2_rescaling.py", ["--lr-schedule", "cyclic:1"], "cyclic"),
    ("experiments/fig2_rescaling.py", ["--batch-size", "0"], "larger than the base"),
    ("experiments/theory_check.py", ["--chains", "1"], "--chains"),
    ("experiments/theory_check.py", ["--steps", "0"], "--steps"),
    ("experiments/run.py", ["--lr-schedule", "warmup:5:const:0.1"], "--lr needs --batch-size"),
    ("experiments/run.py", ["--ratio", "0.1/100", "--lr-schedule", "milestones:@x"], "number"),
    ("experiments/run.py", ["--bs-schedule", "cyclic:0,10:1", "--lr", "0.1"], "positive"),
    ("experiments/run.py", ["--lr", "0.1", "--bs-schedule", "cyclic:10,60000:1"], "more than"),
    ("experiments/run.py", ["--ratio", "0.1/100", "--keep-ratio"], "--keep-ratio"),
    ("experiments/run.py", ["--ratio", "0.1/100", "--grow-batch"], "--grow-batch"),
    (
        "experiments/run.py",
        ["--ratio", "0.1/100", "--checkpoint-steps", "-1"],
        "--checkpoint-steps",
    ),
    ("experiments/run.py", ["--ratio", "0.1/100", "--steps-per-execution", "0"], "from 1"),
    ("experiments/run.py", ["--rescale", "linear", "--base", "0.1/50"], "--batch-size"),
    (
        "experiments/run.py",
        ["--rescale", "linear", "--base", "0.1/50", "--batch-size", "400", "--lr", "1"],
        "drop --ratio/--lr",
    ),
    ("experiments/fig4_interpolation.py", ["--points", "1"], "--points"),
    ("experiments/fig4_interpolation.py", ["--bn", "ghost"], "invalid choice"),
    ("experiments/fig5_breakdown.py", ["--betas", "1,x"], "integers"),
    ("experiments/fig5_breakdown.py", ["--betas", "0"], "at least 1"),
    ("experiments/fig5_breakdown.py", ["--train-sizes", "50001"], "--train-size"),
    ("experiments/fig3_grid.py", ["--lrs", "0.1,abc"], "not a list of numbers"),
    ("experiments/fig3_grid.py", ["--batch-sizes", "0"], "positive"),
    ("experiments/tune.py", ["--ratio-range", "1e-5"], "--ratio-range"),
    ("experiments/tune.py", ["--trials", "0"], "--trials"),
    ("experiments/tune.py", ["--strategy", "multiworker"], "not supported by keras-tuner"),
    ("experiments/fig3_grid.py", ["--strategy", "multiworker"], "not supported by keras-tuner"),
    ("experiments/run.py", ["--ratio", "0.1/100", "--strategy", "all"], "invalid choice"),
    ("experiments/run.py", ["--ratio", "0.1/100", "--cpu-devices", "-2"], "--cpu-devices"),
    ("tools/launch_workers.py", ["-n", "0", "experiments/run.py"], "--workers"),
    ("tools/launch_workers.py", ["experiments/nope.py"], "no such script"),
    ("tools/launch_workers.py", ["experiments/run.py", "--strategy", "none"], "leave --strategy"),
    (
        "experiments/run.py",
        ["--ratio", "0.1/100", "--dataset", "imagenet"],
        "unknown dataset 'imagenet'",
    ),
    ("tools/advise.py", ["runs/does-not-exist", "--batch-size", "10"], "missing"),
    ("tools/advise.py", ["runs/x"], "--batch-size"),
    ("tools/advise.py", ["runs/x", "--batch-size", "many"], "invalid int"),
    ("tools/probe.py", [], "run_dir"),
    ("tools/probe.py", ["runs/does-not-exist"], "missing"),
    ("tools/probe.py", ["/etc/hostname"], "is not a run folder"),
    # numbers that overflow, nest too deep or make no sense
    (
        "experiments/run.py",
        ["--batch-size", "100", "--lr-schedule", "cyclic:0.1,0.2:1e-320"],
        "overflows",
    ),
    (
        "experiments/run.py",
        ["--batch-size", "100", "--lr-schedule", "divide:0.1:1:1e308"],
        "overflows",
    ),
    (
        "experiments/run.py",
        ["--batch-size", "100", "--lr-schedule", "milestones:0.1@1,2x1e300"],
        "overflows",
    ),
    (
        "experiments/run.py",
        ["--rescale", "1000", "--base", "0.1/50", "--batch-size", "400"],
        "out of range",
    ),
    (
        "experiments/run.py",
        ["--batch-size", "100", "--lr-schedule", "warmup:1:" * 600 + "0.1"],
        "nest at most",
    ),
    ("experiments/run.py", ["--ratio", "0.1/100", "--seed", "-1"], "--seed must be"),
    ("experiments/run.py", ["--ratio", "0.1/100", "--seed", "99999999999"], "--seed must be"),
    ("experiments/run.py", ["--ratio", "0.1/100", "--epochs", "1000000000"], "--epochs must be"),
    ("experiments/run.py", ["--lr", "0.1", "--bs-schedule", "const:0.4"], "at least 1"),
    ("experiments/run.py", ["--ratio", "0.1/100", "--loss-target", "nan"], "--loss-target"),
    ("experiments/run.py", ["--ratio", "0.1/100", "--data-dir", "/nonexistent"], "is not a folder"),
    ("experiments/tune.py", ["--batch-sizes", "inf"], "positive finite"),
    ("experiments/tune.py", ["--batch-sizes", "nan"], "positive finite"),
    ("experiments/tune.py", ["--batch-sizes", "12.5"], "whole numbers"),
    ("experiments/tune.py", ["--ratio-range", "nan,1e-2"], "positive finite"),
    ("experiments/tune.py", ["--ratio-range", "1e-2,1e-5"], "LOW < HIGH"),
    ("experiments/fig3_grid.py", ["--lrs", "0.1,nan", "--batch-sizes", "100"], "finite"),
    ("experiments/fig3_grid.py", ["--seeds", "-1"], "--seeds"),
    ("experiments/fig3_grid.py", ["--lrs", "", "--batch-sizes", "100"], "needs a comma"),
    ("experiments/fig3_grid.py", ["--lrs", "0.1", "--batch-sizes", ""], "needs a comma"),
    ("experiments/fig3_grid.py", ["--seeds", ""], "needs a comma"),
    ("experiments/fig3_grid.py", ["--lrs", "0.1"], "go together"),
    ("experiments/fig3_grid.py", ["--max-minutes", "0"], "--max-minutes"),
]


@pytest.mark.parametrize(
    "script,args,fragment", CASES, ids=[f"{c[0].split('/')[-1]}:{' '.join(c[1])}" for c in CASES]
)
def test_rejected_in_one_line(script, args, fragment, tmp_path):
    logdir = tmp_path / "out"
    extra = [] if script.startswith("tools/") else ["--logdir", logdir]
    proc = run_script(script, *args, *extra, timeout=60, cwd=tmp_path)
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-1500:])
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and ": error: " in lines[0] and fragment in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not logdir.exists() and not any(tmp_path.iterdir())


def _fake_run(tmp_path, results_text, config=None):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(config or {"config": {"lr": 0.1}}))
    (run / "results.json").write_text(results_text)
    return run


@pytest.mark.parametrize(
    "results_text,fragment",
    [
        ('{"status": "finished", "epo', "corrupt"),
        ('{"status": "running", "epochs": []}', "not a finished run"),
        ('{"status": "finished", "epochs": []}', "no curvature probe"),
        ("", "corrupt"),
    ],
)
def test_advisor_refuses_bad_run_folders(tmp_path, results_text, fragment):
    run = _fake_run(tmp_path, results_text)
    proc = run_script("tools/advise.py", run, "--batch-size", "100", timeout=60)
    assert proc.returncode == 2 and fragment in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_probe_refuses_a_model_from_elsewhere(tmp_path):
    run = _fake_run(
        tmp_path,
        '{"status": "finished", "epochs": []}',
        {
            "config": {
                "num_train": 1000,
                "dataset": "fashion_mnist",
                "validation_size": 500,
                "seed": 0,
                "lr": 0.1,
                "batch_size": 10,
            },
            "data": {},
        },
    )
    (run / "model.keras").write_bytes(b"PK\x03\x04 not really a keras file")
    proc = run_script(
        "tools/probe.py", run, "--examples", "100", "--noise-examples", "50", timeout=120
    )
    assert proc.returncode == 2 and "cannot load" in proc.stderr, proc.stderr[-1500:]
    assert "Traceback" not in proc.stderr


def test_run_refuses_corrupt_results_in_its_folder(tmp_path):
    from lrbs_tf.training.config import RunConfig

    config = RunConfig(lr=0.1, batch_size=100, logdir=str(tmp_path))
    run = tmp_path / config.run_name
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"config": config.to_dict()}))
    (run / "results.json").write_text('{"status": "runn')
    proc = run_script("experiments/run.py", "--ratio", "0.1/100", "--logdir", tmp_path, timeout=120)
    assert proc.returncode == 2 and "corrupt" in proc.stderr, proc.stderr[-1500:]
    assert len(proc.stderr.strip().splitlines()[-1:]) == 1 and "Traceback" not in proc.stderr


def test_unwritable_logdir(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    proc = run_script(
        "experiments/run.py",
        "--ratio",
        "0.1/100",
        "--epochs",
        "1",
        "--train-size",
        "500",
        "--logdir",
        blocker / "runs",
        timeout=120,
    )
    assert proc.returncode == 1 and "writable" in proc.stderr.strip().splitlines()[-1]
    assert "Traceback" not in proc.stderr
