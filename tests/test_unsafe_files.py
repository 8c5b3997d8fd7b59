"""Nothing lost, round 3: a link, FIFO or copied file in a run folder is never followed, never
blocks and never makes a folder ours; probe.py takes the run's lock and checks it can write before
it probes; what a user types or a file contains never gives a traceback. Every case checks that
nothing outside the run folder changed."""

import gzip
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time

import pytest

from tests.helpers import ROOT, TINY_RUN, default_sigint, needs_fmnist, run_script, snapshot

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


@pytest.fixture
def setting(tmp_path, finished):
    """A copy of the finished run in ``logs/run`` and a user's folder ``mine`` beside it."""
    run = tmp_path / "logs" / "run"
    shutil.copytree(finished, run)
    mine = tmp_path / "mine"
    (mine / "folder").mkdir(parents=True)
    (mine / "file.txt").write_text("the user's file\n")
    (mine / "folder" / "step-0000000001.weights.npz").write_text("the user's\n")
    (mine / "folder" / "notes.txt").write_text("the user's notes\n")
    return run, mine


def _link(run, entry, target):
    path = run / entry
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target, path)


LINKS = [
    # entry of the run folder replaced by a link, to the user's file or folder
    (".lrbs-lock", "file.txt"),
    (".lrbs-reserve", "file.txt"),
    (".lrbs-run", "file.txt"),
    ("model.keras", "file.txt"),
    ("results.json", "file.txt"),
    ("ckpt", "folder"),
    ("tb", "folder"),
    ("tb/train", "folder"),
]


@pytest.mark.parametrize("entry,target", LINKS, ids=[e for e, _ in LINKS])
def test_a_link_in_a_run_folder_is_refused_and_never_followed(setting, entry, target):
    run, mine = setting
    _link(run, entry, mine / target)
    before, theirs = snapshot(run.parent), snapshot(mine)
    proc = run_script(
        "experiments/run.py", *FLAGS, "--logdir", run.parent, "--name", "run", timeout=60
    )
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-2000:]
    if entry == ".lrbs-run":  # a linked marker proves nothing: not ours
        assert "no .lrbs-run marker" in lines[0]
    else:
        assert "damaged" in lines[0] and "symbolic link" in lines[0]
        assert os.path.join("run", entry) in lines[0]
    assert snapshot(run.parent) == before and snapshot(mine) == theirs


@pytest.mark.parametrize(
    "entry,target",
    [pytest.param("ckpt", "folder", marks=pytest.mark.slow), (".lrbs-lock", "file.txt")],
)  # the same removal of a link; the folder case with `make test-all`
def test_overwrite_removes_the_link_itself_not_what_it_points_to(setting, entry, target):
    run, mine = setting
    _link(run, entry, mine / target)
    theirs = snapshot(mine)
    proc = run_script(
        "experiments/run.py",
        *FLAGS,
        "--logdir",
        run.parent,
        "--name",
        "run",
        "--overwrite",
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert snapshot(mine) == theirs
    assert not os.path.islink(run / entry)


FIFOS = [
    (script, entry)
    for script in ("experiments/run.py", "tools/probe.py")
    for entry in ("results.json", "config.json", "model.keras", "tb/written.json")
    if not (script == "tools/probe.py" and entry.startswith("tb/"))  # probe.py reads no tb/
]
PROBE = ["--examples", "500", "--noise-examples", "100"]


@pytest.mark.parametrize("script,entry", FIFOS)
def test_a_fifo_in_place_of_our_file_is_refused_at_once(setting, script, entry):
    run, mine = setting
    os.remove(run / entry)
    os.mkfifo(run / entry)
    before = snapshot(run.parent)
    args = [*FLAGS, "--logdir", run.parent, "--name", "run"] if script.endswith("run.py") else [run]
    tick = time.time()
    proc = run_script(script, *args, timeout=30)  # it used to block forever
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-2000:]
    assert "FIFO" in lines[0] and time.time() - tick < 25
    assert snapshot(run.parent) == before


def test_a_copied_config_json_does_not_make_a_folder_ours(tmp_path, finished):
    """mkdir P/b1; cp <finished run>/config.json P/b1/; notes and plots of the user's beside it."""
    folder = tmp_path / "P" / "b1"
    (folder / "plots").mkdir(parents=True)
    shutil.copy(finished / "config.json", folder)
    (folder / "notes.md").write_text("n\n")
    (folder / "plots" / "a.png").write_bytes(b"png")
    before = snapshot(tmp_path)
    for extra in ([], ["--overwrite"]):
        proc = run_script(
            "experiments/run.py",
            *FLAGS,
            "--logdir",
            tmp_path / "P",
            "--name",
            "b1",
            *extra,
            timeout=60,
        )
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-2000:]
        assert "no .lrbs-run marker" in lines[0] and "--adopt" in lines[0]
        assert snapshot(tmp_path) == before
    # --adopt, on the user's word: it holds another run's settings (its name), so only with
    # --overwrite too is it replaced, and then only lrbs_tf's own files in it
    adopt = [*FLAGS, "--logdir", tmp_path / "P", "--name", "b1", "--adopt"]
    refused = run_script("experiments/run.py", *adopt, timeout=60)
    assert refused.returncode == 2 and "other settings" in refused.stderr, refused.stderr
    assert snapshot(tmp_path) == before
    adopted = run_script("experiments/run.py", *adopt, "--overwrite", timeout=300)
    assert adopted.returncode == 0, adopted.stderr[-2000:]
    assert (folder / "notes.md").read_text() == "n\n"
    assert (folder / "plots" / "a.png").read_bytes() == b"png"
    assert json.load(open(folder / "results.json"))["status"] == "finished"
    assert (folder / ".lrbs-run").is_file()


def _locked(run, shared: bool):
    """A child process that holds the run folder's lock until it is killed."""
    code = (
        "import sys, time; from lrbs_tf.training import folder; "
        f"folder.lock(sys.argv[1], shared={shared}); print('held', flush=True); time.sleep(600)"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(run)], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_probe_takes_the_runs_lock_shared(setting):
    run, _ = setting
    trainer = _locked(run, shared=False)  # a run.py --overwrite of that folder, say
    try:
        proc = run_script("tools/probe.py", run, *PROBE, timeout=60)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 75 and "in use by pid" in lines[-1], proc.stderr[-2000:]
        assert not (run / "probe.json").exists()
    finally:
        trainer.kill()
        trainer.wait()
    prober = _locked(run, shared=True)  # a probe.py at work: training must wait
    try:
        proc = run_script(
            "experiments/run.py",
            *FLAGS,
            "--logdir",
            run.parent,
            "--name",
            "run",
            "--overwrite",
            timeout=60,
        )
        assert proc.returncode == 75, proc.stderr[-2000:]
        assert (run / "model.keras").exists()
    finally:
        prober.kill()
        prober.wait()


@pytest.fixture
def read_only(tmp_path, finished):
    mount = tmp_path / "ro"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(mount)]).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    shutil.copytree(finished, mount / "run")
    subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
    try:
        yield mount / "run"
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_probe_checks_it_can_write_before_it_probes(read_only):
    tick = time.time()
    proc = run_script("tools/probe.py", read_only, *PROBE, timeout=60)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr[-2000:]
    assert "cannot write in" in lines[0] and "Read-only" in lines[0]
    assert time.time() - tick < 10  # before any probing (it used to fail after 18 s)


def test_ctrl_c_in_probe_writes_nothing_and_says_so(setting):
    run, _ = setting
    proc = subprocess.Popen(
        [sys.executable, "tools/probe.py", str(run), *PROBE, "--density"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
        preexec_fn=default_sigint,
    )
    for line in proc.stderr:  # the data are loaded: the probe starts
        if "Fashion-MNIST" in line:
            break
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted: nothing written" in err and "Traceback" not in err
    assert not (run / "probe.json").exists() and not (run / "spectral_density.png").exists()


def _nest(depth):
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("entry", ["config.json", "results.json"])
@pytest.mark.parametrize("script", ["experiments/run.py", "tools/probe.py", "tools/advise.py"])
def test_json_nested_10000_levels_is_refused_in_one_line(setting, entry, script):
    run, _ = setting
    (run / entry).write_text('{"config": {}, "deep": ' + _nest(10000) + "}")
    args = {
        "experiments/run.py": [*FLAGS, "--logdir", run.parent, "--name", "run"],
        "tools/probe.py": [run, *PROBE],
        "tools/advise.py": [run, "--batch-size", "10"],
    }[script]
    proc = run_script(script, *args, timeout=60)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-2000:]
    assert "nested" in lines[0] and "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "encoding",
    ["ascii", pytest.param("latin-1", marks=pytest.mark.slow)],  # ascii: the same fallback
)
def test_output_degrades_to_ascii_where_eta_cannot_be_encoded(finished, encoding):
    env = {"PYTHONIOENCODING": encoding}
    args = [*FLAGS, "--logdir", finished.parent, "--name", "run"]
    for extra in ([], ["--help"]):
        proc = run_script("experiments/run.py", *args, *extra, timeout=60, env=env)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert "eta/S" in proc.stdout and "Traceback" not in proc.stderr


def _idx(path, dims):
    with gzip.open(path, "wb") as f:
        f.write(struct.pack(f">{1 + len(dims)}I", 0x800 + len(dims), *dims))


def test_idx_files_with_no_images_are_refused_with_the_reason(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for part in ("train", "t10k"):
        _idx(data / f"{part}-images-idx3-ubyte.gz", (0, 28, 28))
        _idx(data / f"{part}-labels-idx1-ubyte.gz", (0,))
    proc = run_script(
        "experiments/run.py",
        "--ratio",
        "0.1/100",
        "--data-dir",
        data,
        "--logdir",
        tmp_path / "L",
        timeout=60,
    )
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-2000:]
    assert "holds no images" in lines[0]


def test_a_model_file_that_is_not_a_zip_is_named_as_such(setting):
    run, _ = setting
    (run / "model.keras").write_text("not a zip")
    proc = run_script("tools/probe.py", run, *PROBE, timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and "cannot load" in lines[-1] and "Keras model" in lines[-1]
    assert "File not found" not in proc.stderr


@pytest.mark.parametrize("kind", ["file", "/dev/null", "loop"])
def test_a_logdir_that_cannot_be_a_folder_is_named(tmp_path, kind):
    if kind == "file":
        logdir = tmp_path / "afile"
        logdir.write_text("x")
    elif kind == "loop":
        logdir = tmp_path / "loop"
        os.symlink(tmp_path / "loop", logdir)
    else:
        logdir = "/dev/null"
    proc = run_script("experiments/run.py", "--ratio", "0.1/100", "--logdir", logdir, timeout=60)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr[-2000:]
    assert ("loop of symbolic links" if kind == "loop" else "is not a folder") in lines[0]


def test_a_run_refused_after_tensorflow_loads_leaves_no_reserve(tmp_path):
    proc = run_script(
        "experiments/run.py",
        *FLAGS,
        "--strategy",
        "mirrored",
        "--devices",
        "/gpu:7",
        "--logdir",
        tmp_path,
        "--name",
        "run",
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert not (tmp_path / "run" / ".lrbs-reserve").exists()


# -- Nothing lost, round 4 ----------------------------------------------------------------------

EVIL = "open({marker!r}, 'w').write('imported')\n"


@pytest.fixture(scope="module")
def custom_run(tmp_path_factory):
    """A finished run of a builder whose model has a custom layer (loading its model.keras
    needs the builder's module), the builder copied to a folder of its own."""
    where = tmp_path_factory.mktemp("custom")
    builder = where / "builder.py"
    shutil.copy(os.path.join(ROOT, "tests", "fixtures", "user_models.py"), builder)
    proc = run_script(
        "experiments/run.py", "--ratio", "0.1/100", "--epochs", "1", "--train-size", "500",
        "--validation-size", "500", "--model", f"{builder}:tiny", "--logdir", where / "logs",
        "--name", "run", timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    return where / "logs" / "run", builder


def _forget_custom_layers():
    """Keras' registry of custom classes is global: forget the builder's ``Scale`` so that
    loading the model needs the builder again (another test may have imported it)."""
    import keras

    keras.saving.get_custom_objects().pop("lrbs_test>Scale", None)


def _point_at(run, model):
    saved = json.loads((run / "config.json").read_text())
    saved["config"]["model"] = model
    (run / "config.json").write_text(json.dumps(saved))


def _evil_twin(builder, folder):
    """A copy of ``builder`` that writes ``folder/IMPORTED`` when imported."""
    evil = folder / "evil.py"
    evil.write_text(EVIL.format(marker=str(folder / "IMPORTED")) + builder.read_text())
    return evil


def test_a_run_folder_never_imports_code_its_digest_does_not_vouch_for(tmp_path, custom_run):
    """config.json edited to name another file (a colleague's folder, or one tampered with):
    probe.py refuses in one line and imports nothing; advise.py never imports anything;
    --trust-code (``trust_code=True``) imports it on the user's word."""
    from lrbs_tf.models.registry import load_run_model
    from lrbs_tf.models.sources import UntrustedCodeError

    source, builder = custom_run
    run = tmp_path / "run"
    shutil.copytree(source, run)
    evil = _evil_twin(builder, tmp_path)
    _point_at(run, f"{evil}:tiny")
    before = snapshot(tmp_path)
    proc = run_script("tools/probe.py", run, *PROBE, timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-2000:]
    assert "not importing" in lines[0] and "--trust-code" in lines[0]
    proc = run_script("tools/advise.py", run, "--batch-size", "100", timeout=60)
    assert proc.returncode == 2
    assert not (tmp_path / "IMPORTED").exists() and snapshot(tmp_path) == before
    config = json.loads((run / "config.json").read_text())["config"]
    _forget_custom_layers()
    with pytest.raises(UntrustedCodeError, match="is not the builder the run folder recorded"):
        load_run_model(str(run), config, compile=False)
    assert not (tmp_path / "IMPORTED").exists()
    assert load_run_model(str(run), config, trust_code=True, compile=False).count_params() > 0
    assert (tmp_path / "IMPORTED").exists()


def test_a_builder_missing_its_digest_or_changed_after_the_run_is_not_imported(
    tmp_path, custom_run
):
    from lrbs_tf.models.registry import load_run_model
    from lrbs_tf.models.sources import UntrustedCodeError

    source, builder = custom_run
    config = json.loads((source / "config.json").read_text())["config"]
    changed = tmp_path / "builder.py"
    changed.write_text(EVIL.format(marker=str(tmp_path / "IMPORTED")) + builder.read_text())
    moved = dict(config, model=f"{changed}:tiny")  # the same file name, other content
    _forget_custom_layers()
    with pytest.raises(UntrustedCodeError, match="is not the builder the run folder recorded"):
        load_run_model(str(source), moved, compile=False)
    unrecorded = dict(config, model_source={"kind": "builder"})
    with pytest.raises(UntrustedCodeError, match="records no sha256"):
        load_run_model(str(source), unrecorded, compile=False)
    assert not (tmp_path / "IMPORTED").exists()


def test_a_model_without_custom_layers_loads_without_importing_anything(tmp_path, finished):
    """The folder names a builder, but its model.keras needs no code of it: nothing is
    imported at all (whatever the digest says)."""
    from lrbs_tf.models.registry import load_run_model

    evil = tmp_path / "evil.py"
    evil.write_text(EVIL.format(marker=str(tmp_path / "IMPORTED")))
    config = json.loads((finished / "config.json").read_text())["config"]
    model = load_run_model(str(finished), dict(config, model=f"{evil}:build"), compile=False)
    assert model.count_params() > 0 and not (tmp_path / "IMPORTED").exists()


@pytest.mark.parametrize(
    "script,project,flags",
    [
        ("experiments/tune.py", "random-ratio", ["--trials", "1"]),
        pytest.param(  # the same guard (lrbs_tf.sweeps.tuning) as tune.py's: make test-all
            "experiments/fig3_grid.py",
            "seed0",
            ["--lrs", "0.1", "--batch-sizes", "100"],
            marks=pytest.mark.slow,
        ),
    ],
)
def test_a_sweep_never_deletes_a_keras_tuner_folder_it_did_not_create(
    tmp_path, script, project, flags
):
    mine = tmp_path / "logs" / "keras_tuner" / project
    mine.mkdir(parents=True)
    (mine / "notes.txt").write_text("the user's notes\n")
    (mine / "oracle.json").write_text("{}")  # even keras-tuner's own file names
    before = snapshot(tmp_path)
    proc = run_script(
        script, *flags, "--epochs", "1", "--train-size", "500", "--validation-size", "500",
        "--width", "16", "--logdir", tmp_path / "logs", timeout=300,
    )  # fmt: skip
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "no .lrbs-tuner marker" in lines[-1] and "Traceback" not in proc.stderr
    theirs = {
        k: v
        for k, v in snapshot(tmp_path).items()
        if k.startswith(os.path.join("logs", "keras_tuner"))
    }
    assert theirs == {
        k: v for k, v in before.items() if k.startswith(os.path.join("logs", "keras_tuner"))
    }


def test_a_keras_tuner_folder_of_ours_is_cleared_of_keras_tuners_entries_only(tmp_path):
    from lrbs_tf.sweeps.tuning import PROJECT_MARKER, SweepRefused, claim_project

    claim_project(str(tmp_path), "p")
    project = tmp_path / "p"
    assert (project / PROJECT_MARKER).is_file()
    (project / "oracle.json").write_text("{}")
    (project / "tuner0.json").write_text("{}")
    (project / "trial_0").mkdir()
    (project / "trial_0" / "trial.json").write_text("{}")
    (project / "notes.txt").write_text("the user's notes\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("keep\n")
    os.symlink(outside, project / "trial_1")
    claim_project(str(tmp_path), "p")
    assert sorted(os.listdir(project)) == [PROJECT_MARKER, "notes.txt"]
    assert (outside / "keep.txt").read_text() == "keep\n"
    (tmp_path / "q").mkdir()
    with pytest.raises(SweepRefused, match="no .lrbs-tuner marker"):
        claim_project(str(tmp_path), "q")


def test_a_resume_onto_cut_event_files_is_refused(tmp_path):
    """An interrupted run whose TensorBoard file was cut short: resuming would leave
    TensorBoard without points the record says were written, so the folder is damaged."""
    from lrbs_tf.training import folder
    from tests.drivers.stop_during_training import config

    proc = run_script(
        "tests/drivers/stop_during_training.py", tmp_path, "run", "INT", "line:1", timeout=300
    )
    assert proc.returncode == 130, proc.stderr[-2000:]
    assert folder.inspect(config(str(tmp_path), "run")).mode == "resume"
    events = sorted((tmp_path / "run" / "tb" / "train").glob("events.out.tfevents.*"))
    os.truncate(events[0], os.path.getsize(events[0]) // 2)
    with pytest.raises(folder.RunDamagedError, match="cut short"):
        folder.inspect(config(str(tmp_path), "run"))


def test_an_epoch_record_without_its_fields_is_damage(tmp_path):
    from lrbs_tf.training import folder

    run = tmp_path / "run"
    shutil.copytree(os.path.join(ROOT, "tests", "fixtures", "run-0.2.0-killed"), run)
    state = run / "ckpt" / "state.json"
    saved = json.loads(state.read_text())
    saved["results"]["epochs"][0] = {}
    state.write_text(json.dumps(saved))
    with pytest.raises(folder.RunFolderError, match="epoch record 1 lacks its epoch number"):
        folder.shaped(str(state), "state")


def test_probe_of_a_run_that_trains_is_busy(tmp_path, finished):
    """Another process holds the run (it trains): status 75, as the README says."""
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    results = json.loads((run / "results.json").read_text())
    (run / "results.json").write_text(json.dumps(dict(results, status="running")))
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
         "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)",
         str(run / ".lrbs-lock")],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        proc = run_script("tools/probe.py", run, *PROBE, timeout=60)
    finally:
        holder.kill()
        holder.wait()
    assert proc.returncode == 75 and "in use by" in proc.stderr, proc.stderr[-2000:]


def test_non_finite_numbers_are_null_with_a_reason_and_read_back(tmp_path, finished):
    """probe.json with an infinite B_simple (|g|² not above zero): JSON null plus
    ``b_simple_nonfinite``; advise.py reads it back as infinite."""
    import math

    from lrbs_tf import files
    from lrbs_tf.cli.advise import advice_for

    run = tmp_path / "run"
    shutil.copytree(finished, run)
    probe = {"step_sharpness": 2.5, "b_simple": math.inf, "lambda_max": 10.0}
    files.write_json(str(run / "probe.json"), probe)
    raw = json.loads((run / "probe.json").read_text())
    assert raw["b_simple"] is None and raw["b_simple_nonfinite"] == "inf"
    assert files.read_json(str(run / "probe.json")) == probe
    advice = advice_for(str(run), 400)
    assert advice["base"]["b_simple"] == math.inf
