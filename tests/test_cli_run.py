"""run.py rejects bad flags with one line on stderr, exit status 2, no traceback and no files."""

import os

import pytest

from tests.helpers import run_script

BAD = [
    ["--ratio", "abc"],
    ["--ratio", "0.005/abc"],
    ["--ratio", "0/640"],
    ["--ratio", "-0.005/640"],
    ["--ratio", "0.005/-640"],
    ["--ratio", "0.005/0"],
    ["--ratio", "0.005/64.5"],
    ["--ratio", "nan/640"],
    ["--ratio", "0.005/inf"],
    ["--ratio", "inf", "--batch-size", "640"],
    ["--ratio", "0.005/640/2"],
    ["--ratio", "7.8125e-6"],
    ["--ratio", "0.005/640", "--batch-size", "640"],
    ["--ratio", "0.005/640", "--lr", "0.005"],
    ["--lr", "0.005"],
    ["--batch-size", "640"],
    ["--lr", "0.1", "--batch-size", "0"],
    ["--lr", "0.1", "--batch-size", "1.5"],
    ["--ratio", "0.1/50001"],
    ["--ratio", "0.1/2001", "--train-size", "2000"],
    ["--ratio", "0.1/100", "--epochs", "0"],
    ["--ratio", "0.1/100", "--epochs", "two"],
    ["--ratio", "0.1/100", "--train-size", "0"],
    ["--ratio", "0.1/100", "--validation-size", "60000"],
    ["--ratio", "0.1/100", "--model", "resnet9000"],
    ["--ratio", "0.1/100", "--momentum", "1.5"],
    ["--ratio", "0.1/100", "--jit", "maybe"],
    ["--ratio", "0.1/100", "--name", "../escape"],
    ["--ratio", "0.1/100", "--no-such-flag"],
    [],
]


@pytest.mark.parametrize("args", BAD, ids=[" ".join(a) or "no-args" for a in BAD])
def test_bad_flags(args, tmp_path):
    logdir = tmp_path / "runs"
    proc = run_script("experiments/run.py", *args, "--logdir", logdir, timeout=60)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("run.py: error:"), proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert not os.path.exists(logdir)
