"""Nothing lost, round 3: Ctrl-C and SIGTERM at the moments that used to corrupt the record — during
an epoch's validation pass (Keras' running metrics already reset), between an epoch's record and
its checkpoint, during the final probe — resume to exactly the record of an uninterrupted run:
console epoch lines, results.json, every TensorBoard scalar, the weights."""

import json
import os
import re
import signal
import subprocess
import sys

import pytest

from lrbs_tf.training import signals
from lrbs_tf.training.tensorboard import read_scalars
from tests.helpers import ROOT, default_sigint, needs_fmnist

DRIVER = os.path.join(ROOT, "tests", "drivers", "stop_during_training.py")
LINE = re.compile(r": (epoch \d+/\d+: .*) \([\d.]+ s\)$")


def drive(logdir, *args):
    """The driver in a subprocess, with SIGINT at its default even if the suite runs in the
    background (a background job of a non-interactive shell inherits SIGINT ignored)."""
    return subprocess.run(
        [sys.executable, DRIVER, str(logdir), "run", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
        preexec_fn=default_sigint,
    )


def record(run_dir, *stderr):
    results = json.load(open(os.path.join(run_dir, "results.json")))
    lines = [m.group(1) for text in stderr for ln in text.splitlines() if (m := LINE.search(ln))]
    return {
        "status": results["status"],
        "weights": results["weights_sha1"],
        "epochs_trained": results["epochs_trained"],
        "epochs": [{k: v for k, v in e.items() if k != "wall_time"} for e in results["epochs"]],
        "probe": {k: v for k, v in results["probe"].items() if not k.endswith("seconds")},
        "lines": lines,
        **{
            f"tb/{split}": {
                tag: sorted(values)
                for tag, values in read_scalars(os.path.join(run_dir, "tb", split)).items()
                if not tag.endswith("seconds")
            }
            for split in ("train", "validation", "test", "probe")
        },
    }


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    logdir = tmp_path_factory.mktemp("reference")
    proc = drive(logdir)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return record(logdir / "run", proc.stderr)


STOPS = [
    # signal, moment: the cases of issue 20 (validation values recorded as training ones; an
    # epoch recorded twice) and the final phase
    pytest.param("INT", "validation:2", id="SIGINT-validation:2"),
    pytest.param(  # validation:2 and probe cover it: `make test-all`
        "TERM", "validation:1", id="SIGTERM-validation:1", marks=pytest.mark.slow
    ),
    pytest.param(  # SIGINT's handler: validation:2; a stop inside an epoch: test_resume's
        "INT",
        "line:1",
        id="SIGINT-line:1",
        marks=pytest.mark.slow,  # kills; make test-all
    ),
    pytest.param("TERM", "probe", id="SIGTERM-probe"),
]


@needs_fmnist
@pytest.mark.parametrize("name,when", STOPS)
def test_a_stop_resumes_to_the_uninterrupted_record(reference, tmp_path, name, when):
    outside = tmp_path / "outside.txt"
    outside.write_text("mine")
    stopped = drive(tmp_path, name, when)
    status = 128 + getattr(signal, f"SIG{name}")
    assert stopped.returncode == status, stopped.stderr[-2000:]
    assert "stopped: interrupted: state saved" in stopped.stderr, stopped.stderr[-2000:]
    run_dir = tmp_path / "run"
    assert json.load(open(run_dir / "results.json"))["status"] == "interrupted"
    resumed = drive(tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming" in resumed.stderr
    got = record(run_dir, stopped.stderr, resumed.stderr)
    assert got == reference
    assert json.load(open(run_dir / "results.json"))["resumed"] == 1
    assert sorted(os.listdir(tmp_path)) == ["outside.txt", "run"]
    assert outside.read_text() == "mine"


def test_a_stop_inside_a_deferred_section_waits_for_its_end():
    """Real signals: inside ``deferred`` a SIGINT or SIGTERM is held and raised at the end;
    with ``swallow`` (the save after a first stop) a second one cannot cut the save short."""
    done = []
    with signals.graceful(), pytest.raises(signals.Stop) as stop:
        with signals.deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            done.append("after the signal")
    assert done == ["after the signal"] and stop.value.signum == signal.SIGTERM
    with signals.deferred(swallow=True):
        os.kill(os.getpid(), signal.SIGINT)
        done.append("saved")
    assert done[-1] == "saved"
    assert signals.exit_status(signals.Stop(signal.SIGTERM)) == 143


@needs_fmnist
@pytest.mark.slow  # a run's stops are tested above, a tool's in test_unsafe_files; 35 s
def test_ctrl_c_in_a_sweep_stops_it_at_the_trial_and_the_same_command_continues(tmp_path):
    """keras-tuner counted an interrupted trial as failed and carried on (exit 0): now the
    sweep stops there, says how to continue, and the same command finishes every trial."""
    args = [
        os.path.join(ROOT, "experiments", "tune.py"),
        "--trials",
        "2",
        "--epochs",
        "4",
        "--train-size",
        "3000",
        "--validation-size",
        "500",
        "--width",
        "16",
        "--batch-sizes",
        "50",
        "--logdir",
        str(tmp_path),
    ]
    proc = subprocess.Popen(
        [sys.executable, *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
        preexec_fn=default_sigint,
    )
    for line in proc.stderr:  # the first trial's first epoch is done
        if ": epoch 1/4:" in line:
            break
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    last = err.strip().splitlines()[-1]
    assert "interrupted in trial tune-" in last and "run the same command to continue" in last
    assert "Traceback" not in err and "RunInterrupted" not in err and not out.strip()
    again = subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert again.returncode == 0, again.stderr[-2000:]
    trials = sorted(d for d in os.listdir(tmp_path) if d.startswith("tune-"))
    results = [json.load(open(tmp_path / t / "results.json")) for t in trials]
    assert len(trials) == 2 and all(r["status"] == "finished" for r in results)
    assert sorted(r["resumed"] for r in results) == [0, 1]


def test_a_stop_swallowed_on_its_way_is_still_honoured():
    """A KeyboardInterrupt raised inside TensorFlow can be swallowed there (seen once in the
    parallel suite: a probe ran to its end after Ctrl-C) or turned into another error (seen:
    AttributeError '_type_spec'); lrbs_tf remembers the stop and raises it at the next safe
    point."""
    with signals.graceful():
        try:
            os.kill(os.getpid(), signal.SIGINT)
        except KeyboardInterrupt:
            pass  # what a library that swallows it does
        assert signals.received() == signal.SIGINT
        with pytest.raises(signals.Stop):
            signals.raise_if_received()
    assert signals.received() is None  # forgotten when the outermost section ends
