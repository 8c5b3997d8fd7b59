"""Nothing lost, round 2: what a run folder may be, what lrbs_tf may delete, damaged folders
refused untouched, one process per folder, a full disk, a killed sweep."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from tests.helpers import ROOT, TINY_RUN, needs_fmnist, run_script, snapshot

pytestmark = needs_fmnist
FLAGS = TINY_RUN


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    logdir = tmp_path_factory.mktemp("finished")
    proc = run_script(
        "experiments/run.py", *FLAGS, "--logdir", logdir, "--name", "run", timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return logdir / "run"


def _write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def _status_running(run):
    results = json.load(open(run / "results.json"))
    _write(run / "results.json", json.dumps(dict(results, status="running")))


DAMAGE = [
    # what is done to a finished run folder, a fragment of the message
    ("remove results.json", lambda r: os.remove(r / "results.json"), "results.json is missing"),
    ("remove config.json", lambda r: os.remove(r / "config.json"), "config.json is missing"),
    ("edit the status", _status_running, "no checkpoint to resume from"),
    (
        "truncate model.keras",
        lambda r: open(r / "model.keras", "r+b").truncate(5000),
        "does not match the digest",
    ),
    ("remove model.keras", lambda r: os.remove(r / "model.keras"), "model.keras is missing"),
    ("results.json []", lambda r: _write(r / "results.json", "[]"), "a JSON list"),
    (
        "results.json without epochs",
        lambda r: _write(r / "results.json", '{"status": "finished"}'),
        "no list of epoch",
    ),
    (
        "config.json null",
        lambda r: _write(r / "config.json", '{"config": null}'),
        "no 'config' object",
    ),
    (
        "corrupt written.json",
        lambda r: _write(r / "tb" / "written.json", '{"step": "x"}'),
        "not a valid marks file",
    ),
    ("truncated written.json", lambda r: _write(r / "tb" / "written.json", '{"ste'), "corrupt"),
    (
        "state.json without iterations",
        lambda r: (
            _status_running(r),
            _write(r / "ckpt" / "state.json", '{"epoch": 0, "batch": 0, "metrics": []}'),
        ),
        "not a valid state file",
    ),
]


@pytest.mark.parametrize("what,damage,fragment", DAMAGE, ids=[d[0] for d in DAMAGE])
def test_a_damaged_run_folder_is_refused_and_left_alone(finished, tmp_path, what, damage, fragment):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    damage(run)
    before = snapshot(run)
    proc = run_script(
        "experiments/run.py", *FLAGS, "--logdir", tmp_path, "--name", "run", timeout=60
    )
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and fragment in lines[0], proc.stderr
    assert "--overwrite would delete this run folder" in lines[0]
    assert "tensorflow" not in proc.stderr.lower()  # refused before TensorFlow loaded
    assert snapshot(run) == before


def test_overwrite_replaces_a_damaged_run(finished, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    os.remove(run / "results.json")
    proc = run_script(
        "experiments/run.py",
        *FLAGS,
        "--logdir",
        tmp_path,
        "--name",
        "run",
        "--overwrite",
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.load(open(run / "results.json"))["status"] == "finished"


@pytest.mark.parametrize("name", [".", "..", "../x", ".hidden", "a/b", "", "mydata"])
@pytest.mark.parametrize("overwrite", [False, True])
def test_only_a_plain_new_name_or_a_run_of_ours_is_used(tmp_path, name, overwrite):
    logdir = tmp_path / "logs"
    (logdir / "mydata").mkdir(parents=True)
    (logdir / "mydata" / "notes.txt").write_text("mine")
    (logdir / "finished-elsewhere.txt").write_text("also mine")
    before = snapshot(tmp_path)
    proc = run_script(
        "experiments/run.py",
        *FLAGS,
        "--logdir",
        logdir,
        "--name",
        name,
        *(["--overwrite"] if overwrite else []),
        timeout=60,
    )
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert ("not an lrbs_tf run folder" if name == "mydata" else "--name must be") in lines[0]
    assert snapshot(tmp_path) == before


def _wait_for(path, timeout=120):
    deadline = time.time() + timeout
    while not os.path.exists(path):
        assert time.time() < deadline, f"{path} never appeared"
        time.sleep(0.1)


def test_one_process_per_run_folder_and_a_killed_one_does_not_block(tmp_path):
    args = [
        "--ratio",
        "0.05/64",
        "--epochs",
        "4",
        "--train-size",
        "6000",
        "--validation-size",
        "500",
        "--width",
        "32",
        "--logdir",
        str(tmp_path),
        "--name",
        "run",
    ]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    first = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "experiments", "run.py"), *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for(tmp_path / "run" / "results.json")
        second = run_script("experiments/run.py", *args, timeout=60)
        lines = second.stderr.strip().splitlines()
        assert second.returncode == 75 and len(lines) == 1, second.stderr
        assert f"in use by pid {first.pid}" in lines[0]
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    again = run_script("experiments/run.py", *args, timeout=300)  # the lock died with it
    assert again.returncode == 0, again.stderr[-2000:]
    results = json.load(open(tmp_path / "run" / "results.json"))
    assert results["status"] == "finished" and len(results["epochs"]) == 4


@pytest.fixture
def tiny_disk(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip()[:100]})")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_a_full_disk_fails_cleanly_and_resumes_with_space(finished, tiny_disk):
    shutil.copytree(finished, tiny_disk / "run")  # a finished run already on that disk
    kept = snapshot(tiny_disk / "run")
    args = [
        "experiments/run.py",
        "--ratio",
        "0.1/100",
        "--epochs",
        "2",
        "--train-size",
        "2000",
        "--validation-size",
        "500",
        "--logdir",
        tiny_disk,
        "--name",
        "big",
    ]
    proc = run_script(*args, timeout=300)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 74, proc.stderr[-2000:]
    assert "is full" in lines[-1] and "Traceback" not in proc.stderr
    results = json.load(open(tiny_disk / "big" / "results.json"))
    assert results["status"] == "failed" and "No space left" in results["error"]
    assert snapshot(tiny_disk / "run") == kept
    subprocess.run(["mount", "-o", "remount,size=40m", str(tiny_disk)], check=True)
    again = run_script(*args, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.load(open(tiny_disk / "big" / "results.json"))["status"] == "finished"
    assert snapshot(tiny_disk / "run") == kept


TUNE = [
    "--trials",
    "3",
    "--epochs",
    "3",
    "--train-size",
    "3000",
    "--validation-size",
    "500",
    "--width",
    "16",
    "--batch-sizes",
    "50,100",
    "--seed",
    "0",
]


def _trials(logdir):
    return sorted(d for d in os.listdir(logdir) if d.startswith("tune-"))


def _one_finished_one_resumable(logdir) -> bool:
    statuses = {}
    for name in _trials(logdir) if os.path.isdir(logdir) else []:
        try:
            statuses[name] = json.load(open(logdir / name / "results.json"))["status"]
        except (OSError, ValueError, KeyError):
            pass
    return "finished" in statuses.values() and any(
        status == "running" and os.path.exists(logdir / name / "ckpt" / "state.json")
        for name, status in statuses.items()
    )


@pytest.mark.slow  # minutes of worker processes; `make test-all` runs it
def test_a_killed_sweep_proposes_the_same_trials_and_loses_none(tmp_path):
    clean = run_script("experiments/tune.py", *TUNE, "--logdir", tmp_path / "clean", timeout=600)
    assert clean.returncode == 0, clean.stderr[-2000:]
    names = _trials(tmp_path / "clean")
    assert len(names) == 3
    logdir = tmp_path / "killed"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.Popen(
        [
            sys.executable,
            os.path.join(ROOT, "experiments", "tune.py"),
            *TUNE,
            "--logdir",
            str(logdir),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:  # kill when one trial is finished and another has a checkpoint
        deadline = time.time() + 400
        while not _one_finished_one_resumable(logdir):
            assert time.time() < deadline and proc.poll() is None
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    first = {
        n: json.load(open(logdir / n / "results.json"))
        for n in _trials(logdir)
        if os.path.exists(logdir / n / "results.json")
    }
    again = run_script("experiments/tune.py", *TUNE, "--logdir", logdir, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert _trials(logdir) == names  # the same three trials, no orphans
    rows = open(logdir / "tune.csv").read().strip().splitlines()
    assert len(rows) == 4  # header + every finished trial
    for name, before in first.items():
        after = json.load(open(logdir / name / "results.json"))
        assert after["status"] == "finished"
        if before["status"] == "finished":
            assert after["wall_time"] == before["wall_time"]  # reused, not retrained
        else:
            assert after["resumed"] == 1  # the killed trial resumed from its checkpoint


def test_runs_saved_before_a_setting_existed_are_reused_only_at_its_default():
    """A sweep rerun after an upgrade reuses its finished runs: a setting added since (at the top
    or among the probe settings) that holds its default is the same run; any other value is not."""
    import dataclasses

    from lrbs_tf.probes.settings import ProbeSettings
    from lrbs_tf.training.config import RunConfig, same_settings

    config = RunConfig(lr=0.01, batch_size=1000, probe=ProbeSettings(examples=500), logdir="L")
    saved = json.loads(json.dumps(config.to_dict()))
    assert same_settings(saved, config)
    old = json.loads(json.dumps(saved))
    del old["probe"]["step_batch_size"], old["loss_target"]  # as lrbs_tf 0.1 wrote them
    assert same_settings(old, config)
    for changed in (
        dataclasses.replace(config, probe=ProbeSettings(examples=500, step_batch_size=50)),
        dataclasses.replace(config, probe=ProbeSettings(examples=600)),
        dataclasses.replace(config, loss_target=0.05),
        dataclasses.replace(config, probe=None),
    ):
        assert not same_settings(old, changed)
    # how long the final probe may take is not what the run is (run.py sets it by default)
    shared = dataclasses.replace(config, probe=ProbeSettings(examples=500, time_share=1.0))
    assert same_settings(old, shared) and same_settings(saved, shared)
