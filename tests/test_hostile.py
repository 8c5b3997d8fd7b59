"""Hostile input across the command-line tools: one line on stderr, exit status 2, no traceback,
no files; corrupt run folders are refused with a clear message."""

import json
import os

import numpy as np
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


# -- Nothing lost, round 4: bad data, models and settings are one line (exit 2), before
# anything is written. Files are made here; each case runs the command in a subprocess.


def _png(path, array):
    from PIL import Image

    Image.fromarray(array).save(path)


def _png_header_only(path, width, height):
    """A PNG whose header claims width × height (no pixel data): Pillow reads only headers."""
    import struct
    import zlib

    def chunk(kind, data):
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))


def _image_folder(root, bad=None):
    """Two classes of 12 grey 8×8 images (and ``bad(folder)`` adding a bad file to class b)."""
    import numpy as np

    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        for i in range(12):
            _png(root / name / f"img{i:02d}.png", rng.integers(0, 255, (8, 8), dtype=np.uint8))
    if bad is not None:
        bad(root / "b")
    return root


def _gif(folder):
    from PIL import Image

    frames = [Image.new("P", (8, 8), color=i) for i in range(3)]
    frames[0].save(folder / "x.gif", save_all=True, append_images=frames[1:], loop=0)


def _npz(path, **arrays):
    import numpy as np

    rng = np.random.default_rng(0)
    base = {
        "x_train": rng.integers(0, 255, (60, 8, 8), dtype=np.uint8),
        "y_train": np.arange(60) % 3,
    }
    base.update(arrays)
    np.savez(path, **{k: v for k, v in base.items() if v is not None})
    return path


def _label_array(kind):
    import numpy as np

    y = np.arange(60) % 3
    if kind == "object":
        return np.array(list(y), dtype=object)
    if kind == "string":
        return np.array([str(v) for v in y])
    if kind == "nan":
        out = y.astype(float)
        out[5] = np.nan
        return out
    if kind == "uint64":
        out = y.astype(np.uint64)
        out[3] = 2**64 - 1
        return out
    out = y.astype(np.int64)
    out[7] = 10**9
    return out


BAD_DATA = {
    # name: (make(tmp_path) -> dataset path, fragment of the one-line message)
    "link to /dev/zero": (
        lambda t: _image_folder(t / "d", lambda f: os.symlink("/dev/zero", f / "x.png")),
        "is not a regular file",
    ),
    "link to a 3 GB file": (
        lambda t: _image_folder(t / "d", lambda f: _link_to_sparse(f / "x.png", t / "big.bin")),
        "an image must hold 1 byte to 64 MiB",
    ),
    "zero-byte png": (lambda t: _image_folder(t / "d", lambda f: _touch(f / "x.png")), "is empty"),
    "link to /etc/passwd": (
        lambda t: _image_folder(t / "d", lambda f: os.symlink("/etc/passwd", f / "x.png")),
        "cannot identify image file",
    ),
    "animated gif in a grey folder": (
        lambda t: _image_folder(t / "d", _gif),
        "a GIF in a folder of grey",
    ),
    "decompression bomb first": (
        lambda t: _image_folder(
            t / "d", lambda f: _png_header_only(f.parent / "a" / "a0.png", 20000, 20000)
        ),
        "decompression bomb",
    ),
    "object labels": (lambda t: _npz(t / "d.npz", y_train=_label_array("object")), "dtype object"),
    "object class_names": (
        lambda t: _npz(t / "d.npz", class_names=np.array(["a", "b", "c"], dtype=object)),
        "dtype object",
    ),
    "string labels": (
        lambda t: _npz(t / "d.npz", y_train=_label_array("string")),
        "integer labels",
    ),
    "NaN labels": (lambda t: _npz(t / "d.npz", y_train=_label_array("nan")), "integer labels"),
    "uint64 label 2**64-1": (
        lambda t: _npz(t / "d.npz", y_train=_label_array("uint64")),
        "labels must be class indices",
    ),
    "0-d class_names": (
        lambda t: _npz(t / "d.npz", class_names=np.array("abc")),
        "class_names must be a 1-d array",
    ),
    "a label of 1e9": (
        lambda t: _npz(t / "d.npz", y_train=_label_array("1e9")),
        "more than 100,000",
    ),
    "x_train of shape (N, 0)": (
        lambda t: _npz(t / "d.npz", x_train=np.zeros((60, 0), np.float32)),
        "of some size",
    ),
}


def _touch(path):
    path.write_bytes(b"")
    return path


def _link_to_sparse(link, target, size=3 * 2**30):
    """``link`` → a sparse file of ``size`` bytes (no disk used)."""
    _touch(target)
    os.truncate(target, size)
    os.symlink(target, link)


@pytest.mark.parametrize("case", list(BAD_DATA))
def test_bad_data_is_one_line_before_anything_is_written(tmp_path, case):
    make, fragment = BAD_DATA[case]
    dataset = make(tmp_path)
    logdir = tmp_path / "runs"
    proc = run_script(
        "experiments/run.py", "--ratio", "0.1/10", "--epochs", "1", "--dataset", dataset,
        "--logdir", logdir, timeout=60,
    )  # fmt: skip
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-2000:]
    assert fragment in lines[0] and "Traceback" not in proc.stderr, lines
    assert not logdir.exists()


@pytest.mark.parametrize(
    "value,fragment",
    [
        ("0.00001", "more than the limit of 1e-05 GB"),
        ("abc", "must be a positive number of GB"),
        ("-1", "must be a positive number of GB"),
        ("inf", "must be a positive number of GB"),
    ],
)
def test_the_memory_limit_is_a_setting_refused_in_one_line(tmp_path, value, fragment):
    proc = run_script(
        "experiments/run.py", "--ratio", "0.1/10", "--dataset", _npz(tmp_path / "d.npz"),
        "--logdir", tmp_path / "runs", timeout=60, env={"LRBS_MAX_DATA_GB": value},
    )  # fmt: skip
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and fragment in lines[0], proc.stderr[-2000:]
    assert not (tmp_path / "runs").exists()


EXITING_BUILDERS = {
    "builtins:print": "builtins is not a Python source file",
    "{dir}/exits_on_import.py:build": "called sys.exit(0)",
    "{dir}/exits_when_called.py:build": "called sys.exit(3)",
}


@pytest.mark.parametrize("model", list(EXITING_BUILDERS))
def test_a_builder_that_exits_or_is_no_source_is_one_line(tmp_path, model):
    (tmp_path / "exits_on_import.py").write_text("import sys\nsys.exit(0)\n")
    (tmp_path / "exits_when_called.py").write_text(
        "import sys\n\ndef build(input_shape, num_classes):\n    sys.exit(3)\n"
    )
    proc = run_script(
        "experiments/run.py", "--ratio", "0.1/10", "--dataset", _npz(tmp_path / "d.npz"),
        "--model", model.format(dir=tmp_path), "--logdir", tmp_path / "runs", timeout=120,
    )  # fmt: skip
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-2000:]
    assert EXITING_BUILDERS[model] in lines[0] and not (tmp_path / "runs").exists()


def test_data_that_fails_only_when_read_is_named_and_leaves_no_run_folder(tmp_path):
    """A truncated PNG passes the header checks and fails to decode: the file is named, and
    the run folder made for it is removed again (the run wrote nothing)."""

    def truncated(folder):
        first = sorted(folder.iterdir())[0].read_bytes()
        (folder / "x.png").write_bytes(first[: len(first) // 2])

    dataset = _image_folder(tmp_path / "d", truncated)
    logdir = tmp_path / "runs"
    proc = run_script(
        "experiments/run.py", "--ratio", "0.1/10", "--epochs", "1", "--dataset", dataset,
        "--logdir", logdir, timeout=120,
    )  # fmt: skip
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-2000:]
    assert "cannot decode image" in lines[0] and "x.png" in lines[0]
    assert not logdir.exists() or not any(logdir.iterdir())


def test_npz_members_read_only_when_loaded_are_checked(tmp_path):
    """A member cut short and non-finite pixels show only when the arrays load: DataError
    (one line) with the member, or the count of bad values and the first example."""
    import zipfile

    from lrbs_tf.data import sources
    from lrbs_tf.data.splits import DataError

    x = np.random.default_rng(0).random((60, 8, 8)).astype(np.float32)
    x[4, 2, 3], x[9, 0, 0] = np.nan, np.inf
    with pytest.raises(DataError, match=r"hold 2 NaN or infinite value\(s\), the first in example"):
        sources.load(
            str(_npz(tmp_path / "nan.npz", x_train=x)), validation_size=6, train_size=None, seed=0
        )
    short = _npz(tmp_path / "short.npz")
    with zipfile.ZipFile(short) as z:
        members = {n: z.read(n) for n in z.namelist()}
    members["x_train.npy"] = members["x_train.npy"][:-100]
    with zipfile.ZipFile(short, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    with pytest.raises(DataError, match="cannot read x_train of .*EOF"):
        sources.load(str(short), validation_size=6, train_size=None, seed=0)


def test_a_builder_failing_on_the_datas_shape_is_named_with_keras_reason():
    """Keras' own exception for a pooling layer past a 1×1 map: the line says why (its second
    sentence, once cut) and leaves out Keras' echo of the call's arguments."""
    import keras

    from lrbs_tf.models.sources import failure

    with pytest.raises(ValueError) as caught:
        keras.Sequential([keras.Input((1, 1, 4)), keras.layers.MaxPooling2D(2)])
    line = failure(caught.value)
    assert line.startswith("raised ValueError: Exception encountered when calling MaxPooling2D")
    assert "zero or negative" in line and "Arguments received" not in line
    assert "\n" not in line
