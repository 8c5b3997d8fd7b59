"""Every command prints its results on stdout and everything else — progress, Keras' bars,
estimates — on stderr: each command runs in a subprocess with the two streams captured apart.

A line of progress is recognised by what our progress lines and Keras' bars hold (an ANSI code, a
carriage return, ``[2/4]``, ``[trial]``, ``epoch 1/2``, ``probing``, ``(about …``, ``ETA``,
``elapsed``, ``done in``); stdout must have none, and stderr must have the command's own.
The figure commands, the stability check and the tuner take minutes even when tiny: they are
marked slow.
"""

import json
import os
import re

import numpy as np
import pytest

from tests.helpers import ROOT, run_script

USER = os.path.join(ROOT, "tests", "fixtures", "user_models.py")
PROGRESS = re.compile(
    r"\x1b|\r|\x08|\[\d+/\d+\]|\[trial\]|epoch \d+/\d+|probing|\(about |ETA|elapsed|done in"
)


def shapes(n: int, seed: int):
    """Learnable 8×8 grey images of 3 classes (class c lights up row block c)."""
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % 3).astype(np.int64)
    x = rng.integers(0, 60, (n, 8, 8, 1), dtype=np.uint8)
    for c in range(3):
        x[y == c, 2 * c : 2 * c + 3] += 180
    return x, y


def make_npz(folder, train: int) -> str:
    path = folder / "shapes.npz"
    (xt, yt), (xs, ys) = shapes(train, 0), shapes(60, 1)
    np.savez(path, x_train=xt, y_train=yt, x_test=xs, y_test=ys)
    return str(path)


@pytest.fixture(scope="module")
def npz(tmp_path_factory):
    return make_npz(tmp_path_factory.mktemp("streams"), 300)


def results_only(proc, progress: str) -> None:
    """The command succeeded, its stdout holds no progress, its stderr shows ``progress``."""
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip(), "no results on stdout"
    leaked = [line for line in proc.stdout.splitlines() if PROGRESS.search(line)]
    assert not leaked, f"progress on stdout: {leaked}"
    assert re.search(progress, proc.stderr), f"no {progress!r} on stderr:\n{proc.stderr[-2000:]}"


def test_run_probe_advise_and_theory_print_only_results_on_stdout(npz, tmp_path):
    """run.py --verbose (Keras' bars) --probe on a subclassed CNN, then tools/probe.py and
    tools/advise.py on its folder, and the theory check."""
    logdir = tmp_path / "runs"
    run = run_script(
        "experiments/run.py", "--ratio", "0.04/20", "--epochs", "2", "--dataset", npz,
        "--model", f"{USER}:subclassed_cnn", "--probe", "--probe-examples", "60",
        "--probe-noise-examples", "20", "--verbose", "--logdir", logdir,
    )  # fmt: skip
    # Keras' bar, then our epoch line with the S, η and η/S the epoch ran at
    results_only(run, r"(?m)^\d+/\d+ ━+.*loss.*\n.*epoch 1/2: S 20, η 0.04, η/S 0.002; loss")
    assert "η/S" in run.stdout and "sharpness  width" in run.stdout
    assert "probe: width sharpness" in run.stderr  # the library's progress
    for noise in ("absl::InitializeLog", "cudart_stub", "cuInit", "cpu_feature_guard"):
        assert noise not in run.stderr, noise  # TensorFlow's start-up lines are filtered
    (folder,) = logdir.iterdir()
    results = json.loads((folder / "results.json").read_text())
    assert results["status"] == "finished" and results["probe"]["lambda_max"] > 0
    probe = run_script("tools/probe.py", folder, "--examples", "60", "--noise-examples", "20")
    results_only(probe, r"probe: width sharpness .*; about \d+ s more")
    # the subclassed CNN saved by the run loads back to the same curvature
    assert json.loads((folder / "probe.json").read_text())["lambda_max"] == pytest.approx(
        results["probe"]["lambda_max"], rel=1e-4
    )
    advise = run_script("tools/advise.py", folder, "--batch-size", "40")
    assert advise.returncode == 0 and "linear" in advise.stdout and advise.stderr == ""
    theory = run_script(
        "experiments/theory_check.py", "--chains", "20", "--steps", "20", "--logdir",
        tmp_path / "theory",
    )  # fmt: skip
    results_only(theory, r"theory: stationary E\[L\] .* \(about \d+ s\)")


@pytest.mark.slow
def test_tune_and_the_figures_print_only_results_on_stdout(tmp_path):
    npz = make_npz(tmp_path, 1200)  # Fig. 1 takes batches of 640, Fig. 4 of 1024
    tiny = ("--dataset", npz, "--model", f"{USER}:tiny", "--logdir")
    tune = run_script(
        "experiments/tune.py", "--trials", "2", "--epochs", "1", *tiny, tmp_path / "tune"
    )
    results_only(tune, r"\[trial\] η=")
    figures = {
        "fig1_cyclic.py": ("--epochs", "2", "--stage", "1"),
        "fig2_rescaling.py": ("--epochs", "1", "--base", "0.1/20", "--batch-size", "80"),
        "fig3_grid.py": ("--lrs", "0.05,0.1", "--batch-sizes", "20", "--epochs", "2",
                         "--no-loss-target", "--probe-examples", "60",
                         "--probe-noise-examples", "20"),
        "fig4_interpolation.py": ("--epochs", "1", "--points", "5", "--plane-points", "3"),
        "fig5_breakdown.py": ("--epochs", "1", "--betas", "1,2", "--train-sizes", "200"),
        "stability_check.py": ("--epochs", "1"),
    }  # fmt: skip
    for script, flags in figures.items():
        proc = run_script(f"experiments/{script}", *flags, *tiny, tmp_path / script)
        results_only(proc, r"\[1/\d+\]|\(about ")
