"""tf.distribute: the same η, losses, weights and probes on 1 and 2 replicas; multi-worker runs.

Multi-device runs need the CPU split into logical devices before TensorFlow starts, and
multi-worker runs need several processes, so those tests run subprocesses with timeouts.
"""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from lrbs_tf import distribute
from lrbs_tf.core.optimizers import RATIO_KEY, split_step_ratio
from lrbs_tf.core.plan import epoch_batch_sizes, make_plan
from lrbs_tf.training.config import ConfigError, RunConfig
from tests.helpers import ROOT, needs_fmnist, run_script

DRIVER = "tests/drivers/distributed_check.py"


def driver_result(proc):
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT ") :])


# -- MirroredStrategy over two logical CPUs ---------------------------------------------------


@pytest.fixture(scope="module")
def mirrored_runs(tmp_path_factory):
    return driver_result(
        run_script(DRIVER, "train", tmp_path_factory.mktemp("mirrored"), timeout=600)
    )


@pytest.mark.parametrize("case", ["constant", "cyclic", "ratio_schedule"])
def test_mirrored_run_matches_single_device(mirrored_runs, case):
    run = mirrored_runs[case]
    one, two = run["none"], run["mirrored"]
    assert (one["replicas"], two["replicas"]) == (1, 2)
    # The global batch, not the per-replica one: odd sizes split 13 + 12 and 8 + 7.
    assert two["batch_size"] == one["batch_size"]
    assert any(s % 2 for s in two["batch_size"])
    # The applied η of every step is read back bit for bit, and equals float32(η/S)·S.
    assert two["lr"] == one["lr"]
    assert two["ratio"] == one["ratio"]
    expected = (np.float32(two["ratio"]) * np.float32(two["batch_size"])).astype(np.float32)
    np.testing.assert_array_equal(np.float32(two["lr"]), expected)
    # Same losses (every step, and the epoch means over the global batch) and weights.
    np.testing.assert_allclose(two["loss"], one["loss"], rtol=2e-6, atol=1e-6)
    np.testing.assert_allclose(two["train_loss"], one["train_loss"], rtol=2e-6)
    assert run["max_weight_diff"] < 1e-5 * max(1.0, run["max_weight"])


def test_cyclic_case_really_cycles(mirrored_runs):
    sizes = mirrored_runs["cyclic"]["mirrored"]["batch_size"]
    ratios = mirrored_runs["ratio_schedule"]["mirrored"]["ratio"]
    assert {25, 51} <= set(sizes)
    assert len(set(np.round(ratios, 10))) == 2


@pytest.fixture(scope="module")
def probes():
    return driver_result(run_script(DRIVER, "probe", "-", timeout=600))


@pytest.mark.parametrize("bn_mode", ["inference", "batch"])
def test_probes_same_with_one_and_two_replicas(probes, bn_mode):
    one, two = probes["none"][bn_mode], probes["mirrored"][bn_mode]
    assert (one["replicas"], two["replicas"]) == (1, 2)
    for key in ("lambda_max", "trace", "loss"):
        assert two[key] == pytest.approx(one[key], rel=1e-10), key
    np.testing.assert_allclose(two["hv"], one["hv"], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(two["gradient"], one["gradient"], rtol=1e-10, atol=1e-14)


def test_gradient_noise_same_with_one_and_two_replicas(probes):
    for key in ("b_simple", "trace_c"):
        assert probes["mirrored"][key] == pytest.approx(probes["none"][key], rel=1e-6)


# -- pieces, in process -----------------------------------------------------------------------


def test_tiny_last_batch_joins_the_one_before():
    assert epoch_batch_sizes(101, 25, 0, min_batch=2) == [25, 25, 25, 26]
    assert epoch_batch_sizes(102, 25, 0, min_batch=2) == [25, 25, 25, 25, 2]
    assert epoch_batch_sizes(1, 25, 0, min_batch=2) == [1]
    plan = make_plan(0.1, 25)
    sizes, ratios = plan.epoch(101, 0, min_batch=2)
    assert sizes == [25, 25, 25, 26] and ratios == [0.1 / 25] * 4


def test_step_ratio_forms():
    import tensorflow as tf

    x, y = tf.ones([3, 2]), tf.zeros([3])
    assert split_step_ratio((x, y))[1] is None
    assert float(split_step_ratio((x, y, tf.constant(0.5)))[1]) == 0.5
    data, ratio = split_step_ratio((x, y, {RATIO_KEY: tf.fill([3], 0.25)}))
    assert len(data) == 2 and ratio.shape == (3,)
    sample_weight = tf.ones([3])
    assert split_step_ratio((x, y, sample_weight))[1] is None  # a sample weight stays one


@pytest.mark.parametrize(
    "settings,message",
    [
        (dict(strategy="gpus"), "--strategy must be"),
        (dict(cpu_devices=-1), "--cpu-devices"),
        (dict(peer_timeout=0), "--peer-timeout"),
    ],
)
def test_bad_distribute_settings(settings, message):
    with pytest.raises(ConfigError, match=message):
        RunConfig(lr=0.1, batch_size=10, **settings).validate()


@pytest.mark.parametrize(
    "tf_config,message",
    [
        (None, "needs TF_CONFIG"),
        ("not json", "not a cluster spec"),
        (
            '{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 3}}',
            "not in the cluster",
        ),
    ],
)
def test_multiworker_needs_a_valid_tf_config(monkeypatch, tf_config, message):
    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", tf_config)
    with pytest.raises(distribute.DistributeError, match=message):
        distribute.cluster_from_env()


def test_single_device_strategies_are_none():
    assert distribute.make_strategy("none") is None
    assert distribute.make_strategy("auto") is None  # no GPUs here
    with pytest.raises(distribute.DistributeError, match="--devices needs"):
        distribute.make_strategy("none", devices="/cpu:0")
    with pytest.raises(distribute.DistributeError, match="unknown device"):
        distribute.make_strategy("mirrored", devices="/gpu:7")


def test_cpu_split_after_tensorflow_started_is_a_clear_error():
    code = (
        "import tensorflow as tf; tf.constant(1.0) + 1\n"
        "from lrbs_tf.distribute.strategy import split_cpu, DistributeError\n"
        "try:\n    split_cpu(2)\nexcept DistributeError as e:\n    print('ERR', e)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
    )
    assert "ERR cannot split the CPU into 2 devices after TensorFlow has started" in proc.stdout


@pytest.mark.parametrize(
    "args,message",
    [
        (["--strategy", "multiworker"], "needs TF_CONFIG"),
        (["--strategy", "mirrored", "--devices", "/gpu:3"], "unknown device"),
    ],
)
def test_run_cli_distribute_errors(tmp_path, args, message):
    proc = run_script(
        "experiments/run.py",
        "--ratio",
        "0.1/50",
        "--dataset",
        "cifar10_synthetic",
        "--train-size",
        "100",
        "--epochs",
        "1",
        "--logdir",
        tmp_path,
        *args,
        timeout=120,
        env={"TF_CONFIG": ""} if "multiworker" in args else None,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("run.py: error:") and message in lines[-1]


@pytest.mark.slow  # the mirrored runs above train through the same loop; this adds the flags
def test_run_cli_two_logical_cpus(tmp_path):
    proc = run_script(
        "experiments/run.py",
        "--ratio",
        "0.02/25",
        "--dataset",
        "cifar10_synthetic",
        "--train-size",
        "101",
        "--validation-size",
        "50",
        "--epochs",
        "1",
        "--logdir",
        tmp_path,
        "--name",
        "two",
        "--strategy",
        "mirrored",
        "--cpu-devices",
        "2",
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "MirroredStrategy, 2 replicas" in proc.stdout
    config = json.load(open(tmp_path / "two" / "config.json"))
    assert config["distribute"]["replicas"] == 2
    assert config["jit_compile"] is False and config["steps_per_execution"] == 1
    results = json.load(open(tmp_path / "two" / "results.json"))
    assert results["epochs"][0]["steps"] == 4  # 25, 25, 25, 26: the tail of 1 was merged


# -- MultiWorkerMirroredStrategy: worker processes on 127.0.0.1 -------------------------------

MW_RUN = [
    "experiments/run.py",
    "--ratio",
    "0.02/64",
    "--train-size",
    "2000",
    "--validation-size",
    "1000",
]


def worker_env(ports, index):
    return dict(
        os.environ, TF_CONFIG=distribute.local_tf_config(ports, index), TF_CPP_MIN_LOG_LEVEL="2"
    )


@needs_fmnist
@pytest.mark.slow  # worker processes on 127.0.0.1 (40 s); `make test-all`, with the kill test below
def test_two_workers_identical_weights_one_results_folder(tmp_path):
    logs = tmp_path / "logs"
    proc = run_script(
        "tools/launch_workers.py",
        "-n",
        "2",
        "--timeout",
        "400",
        "--log-dir",
        logs,
        "--",
        *MW_RUN,
        "--epochs",
        "2",
        "--logdir",
        tmp_path / "runs",
        timeout=450,
    )
    assert proc.returncode == 0, proc.stdout[-3000:]
    digests = []
    for i in range(2):
        text = (logs / f"worker-{i}.log").read_text()
        line = [ln for ln in text.splitlines() if ln.startswith("devices")][-1]
        assert f"task worker:{i}" in line and "MultiWorkerMirroredStrategy, 2 replicas" in line
        digests.append(line.rsplit("sha1 ", 1)[1])
    assert digests[0] == digests[1]
    runs = os.listdir(tmp_path / "runs")
    assert len(runs) == 1  # only the chief writes
    run_dir = tmp_path / "runs" / runs[0]
    results = json.load(open(run_dir / "results.json"))
    assert results["status"] == "finished" and results["weights_sha1"].startswith(digests[0])
    assert results["distribute"]["workers"] == 2
    # S is global: 64 per step (32 per worker), 2000 = 31 × 64 + 16
    from lrbs_tf.training.tensorboard import read_scalars

    sizes = [v for _, v in read_scalars(str(run_dir / "tb" / "train"))["step/batch_size"]]
    assert sizes == ([64.0] * 31 + [16.0]) * 2


@needs_fmnist
@pytest.mark.slow  # minutes of worker processes; `make test-all` runs it
def test_killing_a_worker_stops_the_other_then_both_resume(tmp_path):
    ports = distribute.free_ports(2)
    args = [
        os.path.join(ROOT, MW_RUN[0]),
        *MW_RUN[1:],
        "--epochs",
        "4",
        "--logdir",
        str(tmp_path),
        "--name",
        "mw",
        "--strategy",
        "multiworker",
        "--peer-timeout",
        "30",
    ]
    procs = [
        subprocess.Popen(
            [sys.executable, *args],
            env=worker_env(ports, i),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        for i in range(2)
    ]
    try:
        results = tmp_path / "mw" / "results.json"
        deadline = time.time() + 240
        while time.time() < deadline:  # wait for the first epoch's checkpoint
            if results.exists() and json.loads(results.read_text())["epochs"]:
                break
            time.sleep(0.5)
        else:
            pytest.fail("the workers did not finish an epoch in 240 s")
        procs[1].send_signal(signal.SIGKILL)
        killed = time.time()
        out, err = procs[0].communicate(timeout=120)
        waited = time.time() - killed
    finally:
        for p in procs:
            p.kill()
            p.wait()
    assert procs[0].returncode in (distribute.PEER_LOST_EXIT, -signal.SIGKILL), err[-2000:]
    last = err.strip().splitlines()[-1]
    assert "lost contact with another worker" in last or "no progress for" in last, last
    assert waited < 30 + 15  # --peer-timeout plus the watchdog's granularity
    state = json.loads(results.read_text())
    assert state["status"] == "failed" and len(state["epochs"]) >= 1
    # A worker that cannot read the chief's checkpoint would start afresh: refused, clearly.
    ports = distribute.free_ports(2)
    elsewhere = [str(tmp_path / "elsewhere") if a == str(tmp_path) else a for a in args]
    mismatched = [
        subprocess.Popen(
            [sys.executable, *(elsewhere if i else args)],
            env=worker_env(ports, i),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        for i in range(2)
    ]
    for p in mismatched:
        _, err = p.communicate(timeout=180)
        assert p.returncode == 2, err[-2000:]
        assert "the workers disagree on where the run starts" in err.strip().splitlines()[-1]
    # The same command on both workers resumes from the chief's checkpoint.
    relaunch = run_script(
        "tools/launch_workers.py",
        "-n",
        "2",
        "--timeout",
        "400",
        "--log-dir",
        tmp_path / "logs",
        "--",
        *[a for a in args if a != "--strategy" and a != "multiworker"],
        timeout=450,
    )
    assert relaunch.returncode == 0, relaunch.stdout[-3000:]
    state = json.loads(results.read_text())
    assert state["status"] == "finished" and state["resumed"] == 1
    assert [e["epoch"] for e in state["epochs"]] == [1, 2, 3, 4]


@needs_fmnist
@pytest.mark.slow
def test_figure_script_under_two_workers_writes_its_outputs_once(tmp_path):
    """fig2 under two workers: four runs in one cluster, the chief alone writes the figure."""
    logs = tmp_path / "logs"
    proc = run_script(
        "tools/launch_workers.py",
        "-n",
        "2",
        "--timeout",
        "500",
        "--log-dir",
        logs,
        "--",
        "experiments/fig2_rescaling.py",
        "--epochs",
        "1",
        "--train-size",
        "2000",
        "--validation-size",
        "1000",
        "--logdir",
        tmp_path / "fig2",
        timeout=560,
    )
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "wrote" in (logs / "worker-0.log").read_text()
    assert "the chief (worker 0) writes" in (logs / "worker-1.log").read_text()
    outputs = sorted(os.listdir(tmp_path / "fig2"))
    assert [o for o in outputs if o.startswith("fig2.")] == ["fig2.csv", "fig2.json", "fig2.png"]
    assert len([o for o in outputs if o.startswith("fig2-")]) == 4
