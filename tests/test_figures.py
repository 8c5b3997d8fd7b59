"""The figure scripts run end to end on a small Fashion-MNIST subset and write what they say."""

import csv
import json
import os

import pytest

from tests.helpers import needs_fmnist, run_script

pytestmark = needs_fmnist
SMALL = ["--train-size", "1200", "--validation-size", "500", "--width", "32"]


def test_fig1_small(tmp_path):
    proc = run_script(
        "experiments/fig1_cyclic.py",
        "--epochs",
        "2",
        "--stage",
        "1",
        *SMALL,
        "--logdir",
        tmp_path,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.load(open(tmp_path / "fig1.json"))
    assert len(report["runs"]) == 4 and all(r["status"] == "finished" for r in report["runs"])
    assert len(report["curve_distances"]["test_accuracy"]) == 6
    rows = list(csv.DictReader(open(tmp_path / "fig1.csv")))
    assert [r["pair"] for r in rows] == ["cyclic", "cyclic", "constant", "constant"]
    for png in ("fig1.png", "fig1_sde_time.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "curve distance" in proc.stdout


@pytest.mark.slow  # fig1 runs the figures' run loop and tables; this one with `make test-all`
def test_fig2_small(tmp_path):
    proc = run_script(
        "experiments/fig2_rescaling.py",
        "--epochs",
        "1",
        "--base",
        "0.05/50",
        "--batch-size",
        "200",
        *SMALL,
        "--logdir",
        tmp_path,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.load(open(tmp_path / "fig2.json"))
    lrs = {r["setting"].split(":")[0]: r["lr"] for r in report["runs"]}
    assert lrs == pytest.approx({"baseline": 0.05, "linear": 0.2, "sqrt": 0.1, "none": 0.05})
    assert report["runs"][0]["distance_to_baseline_test"] == 0
    assert os.path.getsize(tmp_path / "fig2.png") > 10000
    # What a user reads: one line per epoch and per run, no Keras per-step bars.
    assert "━" not in proc.stdout + proc.stderr
    assert proc.stderr.count("epoch 1/1:") == 4 and proc.stderr.count("finished after 1 ") == 4


@pytest.mark.parametrize(
    "script,args",
    [
        ("experiments/fig1_cyclic.py", ["--stage", "0"]),
        ("experiments/fig1_cyclic.py", ["--epochs", "0"]),
        ("experiments/fig2_rescaling.py", ["--base", "0.1/50", "--batch-size", "25"]),
        ("experiments/fig2_rescaling.py", ["--rules", "linear,cubic"]),
        ("experiments/fig2_rescaling.py", ["--base", "0.1"]),
    ],
)
def test_figure_scripts_reject_bad_flags(script, args, tmp_path):
    proc = run_script(script, *args, "--logdir", tmp_path / "out", timeout=60)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path / "out").exists()


def test_fig4_small(tmp_path):
    proc = run_script(
        "experiments/fig4_interpolation.py",
        "--epochs",
        "1",
        *SMALL,
        "--points",
        "4",
        "--eval-examples",
        "300",
        "--plane-points",
        "3",
        "--logdir",
        tmp_path,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.load(open(tmp_path / "fig4.json"))
    assert set(report["curves"]) == {"A->B", "A->C", "B->C"}
    assert report["curves"]["A->B"]["alphas"] == [-1.0, 0.0, 1.0, 2.0]
    assert report["curves"]["A->B"]["train_loss"][1] == pytest.approx(
        report["curves"]["A->C"]["train_loss"][1]
    )  # the same model A at α = 0
    assert len(report["planes"]["A"]["loss"]) == 3
    for png in ("fig4.png", "fig4_plane.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_fig5_small(tmp_path):
    proc = run_script(
        "experiments/fig5_breakdown.py",
        "--epochs",
        "1",
        "--width",
        "32",
        "--betas",
        "1,40",
        "--train-sizes",
        "1000,400",
        "--validation-size",
        "500",
        "--base",
        "0.1/5",
        "--logdir",
        tmp_path,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.load(open(tmp_path / "fig5.json"))["rows"]
    assert [(r["train_size"], r["beta"]) for r in rows] == [
        (1000, 1),
        (1000, 40),
        (400, 1),
        (400, 40),
    ]
    assert rows[1]["lr"] == pytest.approx(4.0) and rows[1]["batch_size"] == 200
    assert all(r["seeds"] == 1 for r in rows)
    assert (tmp_path / "fig5.png").stat().st_size > 10000
