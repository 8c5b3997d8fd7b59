"""tf.distribute for lrbs_tf: choosing a strategy, logical CPU devices, chief-only writes.

* :func:`split_cpu` splits the CPU into N logical devices (to exercise multi-device code on a
  machine without GPUs); TensorFlow allows it only before its first operation.
* :func:`make_strategy` turns ``auto | none | mirrored | multiworker`` (+ devices) into a
  strategy: ``auto`` is MirroredStrategy when more than one GPU is visible, else none;
  ``multiworker`` is MultiWorkerMirroredStrategy from ``TF_CONFIG`` (see
  ``tools/launch_workers.py``), with a :class:`Watchdog` so that a missing or dead peer ends
  the process with a clear error instead of a hang.
* Under any strategy the batch size that sets the noise is the **global** batch, summed over
  replicas and workers: :class:`lrbs_tf.optimizers.RatioTrainStep` all-reduces it every step
  and reduces the loss as Σ(per-example loss) / global batch, so gradients, η and the reported
  S do not depend on the replica count.
* :func:`keras_multiworker_fix` is a narrow, version-guarded work-around for Keras 3's broken
  ``fit`` under MultiWorkerMirroredStrategy (keras-team/keras#20585).
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time

log = logging.getLogger(__name__)

STRATEGIES = ("auto", "none", "mirrored", "multiworker")
PEER_LOST_EXIT = 3  # exit status of a worker whose peers stopped answering


class DistributeError(RuntimeError):
    """A strategy that cannot be set up here; the message says why, in one line."""


def split_cpu(count: int) -> None:
    """Split the first physical CPU into ``count`` logical devices (``/cpu:0`` … ``/cpu:N-1``).

    Must run before TensorFlow's first operation; calling it again with the same count is a
    no-op.
    """
    import tensorflow as tf

    if count < 1:
        raise DistributeError(f"--cpu-devices must be at least 1, got {count}")
    cpu = tf.config.list_physical_devices("CPU")[0]
    current = tf.config.get_logical_device_configuration(cpu)
    if current is not None and len(current) == count:
        return
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(count)])
    except RuntimeError as e:
        raise DistributeError(
            f"cannot split the CPU into {count} devices after TensorFlow has started ({e}); "
            "call lrbs_tf.distribute.split_cpu before any TensorFlow operation") from None


def make_strategy(name: str = "auto", devices: str | None = None,
                  peer_timeout: float | None = None):
    """The strategy for ``name`` (one of :data:`STRATEGIES`), or None for a single device.

    ``devices`` is a comma-separated list (``/gpu:0,/gpu:1`` or ``/cpu:0,/cpu:1``) for
    MirroredStrategy; default: every GPU, else every logical CPU. ``peer_timeout`` bounds how
    long a multi-worker collective may wait for the other workers (seconds).
    """
    if name not in STRATEGIES:
        raise DistributeError(f"--strategy must be one of {', '.join(STRATEGIES)}, got {name!r}")
    key = (name, devices)
    if key not in _strategies:  # one object per setting: a model built in its scope trains there
        _strategies[key] = _new_strategy(name, devices, peer_timeout)
    return _strategies[key]


_strategies: dict = {}


def _new_strategy(name, devices, peer_timeout):
    import tensorflow as tf

    if name == "auto":
        gpus = tf.config.list_logical_devices("GPU")
        if devices is None and len(gpus) < 2:
            return None
        name = "mirrored"
    if name == "none":
        if devices is not None:
            raise DistributeError("--devices needs --strategy mirrored (or auto)")
        return None
    if name == "mirrored":
        chosen = _device_list(devices)
        log.info("MirroredStrategy over %s", ", ".join(chosen))
        return tf.distribute.MirroredStrategy(chosen)
    if devices is not None:
        raise DistributeError("--devices does not apply to --strategy multiworker: each worker "
                              "uses its own devices; set CUDA_VISIBLE_DEVICES per worker")
    return _multiworker(peer_timeout)


def _device_list(devices: str | None) -> list[str]:
    import tensorflow as tf

    if devices:
        chosen = [d.strip() for d in devices.split(",") if d.strip()]
        known = {_short(d.name) for d in tf.config.list_logical_devices()}
        missing = [d for d in chosen if _short(d) not in known]
        if missing:
            raise DistributeError(f"unknown device(s) {', '.join(missing)}; this machine has "
                                  f"{', '.join(sorted(known))}")
        if len(set(chosen)) != len(chosen):
            raise DistributeError(f"--devices lists a device twice: {devices}")
        return chosen
    gpus = tf.config.list_logical_devices("GPU")
    chosen = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
    if len(chosen) < 2:
        log.warning("MirroredStrategy with a single device (%s): split the CPU with "
                    "--cpu-devices N to test multi-device code without GPUs", chosen[0])
    return chosen


def _short(device: str) -> str:
    """``/job:localhost/replica:0/task:0/device:CPU:0`` or ``/device:CPU:0`` → ``/cpu:0``."""
    return "/" + device.lower().rsplit("/", 1)[-1].replace("device:", "")


def cluster_from_env() -> dict:
    """The parsed ``TF_CONFIG``, checked: a cluster with workers and this task's place in it."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        raise DistributeError("--strategy multiworker needs TF_CONFIG (start the workers with "
                              "tools/launch_workers.py, or see the README)")
    try:
        config = json.loads(raw)
        workers = config["cluster"]["worker"]
        task = config["task"]
        index = int(task["index"])
        kind = task["type"]
    except (ValueError, KeyError, TypeError) as e:
        raise DistributeError(f"TF_CONFIG is not a cluster spec with cluster.worker and "
                              f"task.type/index ({e})") from None
    size = len(config["cluster"].get(kind, []))
    if kind not in ("worker", "chief") or not 0 <= index < size:
        raise DistributeError(f"TF_CONFIG task {kind}:{index} is not in the cluster "
                              f"({size} {kind} address(es))")
    return {"workers": workers, "type": kind, "index": index,
            "chief": config["cluster"].get("chief", [])}


def free_ports(count: int) -> list[int]:
    """``count`` TCP ports free on 127.0.0.1 right now (for local workers)."""
    import socket

    sockets = []
    for _ in range(count):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        sockets.append(s)
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def local_tf_config(ports: list[int], index: int) -> str:
    """``TF_CONFIG`` of worker ``index`` in a cluster of workers on 127.0.0.1:``ports``."""
    return json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                       "task": {"type": "worker", "index": index}})


_watchdog = None


def _multiworker(peer_timeout):
    import tensorflow as tf

    cluster = cluster_from_env()
    keras_multiworker_fix()
    timeout = float(peer_timeout or 300)
    start_watchdog(timeout, "waiting for the other workers to connect")
    options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=timeout)
    strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    pause_watchdog()
    log.info("MultiWorkerMirroredStrategy: task %s:%d of %d worker(s), %d replica(s) in sync",
             cluster["type"], cluster["index"], len(cluster["workers"]) + len(cluster["chief"]),
             strategy.num_replicas_in_sync)
    return strategy


def chief_task() -> bool:
    """Is this process the chief of the ``TF_CONFIG`` cluster (True without one)? Readable
    before any strategy exists, for a CLI's own outputs (tables, figures)."""
    if not os.environ.get("TF_CONFIG"):
        return True
    cluster = cluster_from_env()
    return cluster["type"] == "chief" or (cluster["index"] == 0 and not cluster["chief"])


def is_multiworker(strategy) -> bool:
    import tensorflow as tf

    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def is_chief(strategy) -> bool:
    """True where results are written: always without a multi-worker strategy; otherwise the
    task ``chief:0``, or ``worker:0`` when the cluster has no chief (:func:`chief_task`)."""
    return strategy is None or not is_multiworker(strategy) or chief_task()


def model_strategy(model):
    """The strategy ``model`` was built under, or None (one device)."""
    strategy = getattr(model, "_distribute_strategy", None)
    return strategy if strategy is not None and replicas(strategy) > 1 else None


def replicas(strategy) -> int:
    return 1 if strategy is None else int(strategy.num_replicas_in_sync)


def describe(strategy) -> dict:
    """What ran where, for ``config.json``."""
    if strategy is None:
        return {"strategy": "none", "replicas": 1}
    name = "MultiWorkerMirroredStrategy" if is_multiworker(strategy) else type(strategy).__name__
    out = {"strategy": name, "replicas": replicas(strategy),
           "devices": list(strategy.extended.worker_devices)}
    if is_multiworker(strategy):
        resolver = strategy.cluster_resolver
        out.update(workers=sum(len(v) for v in resolver.cluster_spec().as_dict().values()),
                   task=f"{resolver.task_type}:{resolver.task_id}")
    return out


def check_workers_agree(strategy, values, what: str) -> None:
    """Raise :class:`DistributeError` unless every worker passes the same ``values`` (floats).

    One all-reduce of ``[v, v²]``: the values agree when their variance over the replicas is 0.
    """
    import numpy as np
    import tensorflow as tf

    local = tf.constant(np.asarray(values, np.float64))

    @tf.function
    def reduce():
        def on_replica():
            ctx = tf.distribute.get_replica_context()
            return ctx.all_reduce(tf.distribute.ReduceOp.SUM, tf.stack([local, local * local]))
        return strategy.run(on_replica)

    sums = strategy.experimental_local_results(reduce())[0].numpy()
    n = replicas(strategy)
    mean = sums[0] / n
    spread = sums[1] / n - mean ** 2
    if np.any(np.abs(spread) > 1e-9 * (1.0 + mean ** 2)):
        raise DistributeError(f"the workers disagree on {what}; with --strategy multiworker "
                              "put --logdir on a file system every worker can read (the "
                              "others resume from the chief's checkpoint)")


def data_options():
    """tf.data options for datasets handed to a strategy: the data are in-memory tensors, so
    workers split the batches (``AutoShardPolicy.DATA``) instead of trying files first."""
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return options


def scope(strategy):
    """``strategy.scope()``, or a no-op without a strategy."""
    return contextlib.nullcontext() if strategy is None else strategy.scope()


# -- keeping workers from hanging --------------------------------------------------------

class Watchdog:
    """Ends this process when nothing has progressed for ``timeout`` seconds.

    A multi-worker collective waits for every peer; if one died or never started, the others
    would wait for ever (TensorFlow waits up to an hour for peers to register, and catches
    SIGTERM). The wait happens inside TensorFlow's C++ code without releasing Python's GIL, so
    the watchdog is a small separate process: training, evaluation and probes call
    :func:`heartbeat`, which writes to its pipe (at most once a second); when the beats stop,
    it prints what this process was waiting for and kills it with SIGKILL (exit status 137).
    :func:`pause_watchdog` stops the clock outside collective work (between runs).
    """

    CODE = r"""
import os, select, signal, sys, time
parent, timeout = int(sys.argv[1]), float(sys.argv[2])
what, last, paused = sys.argv[3], time.monotonic(), False
while True:
    ready, _, _ = select.select([0], [], [], 1.0)
    if ready:
        data = os.read(0, 4096)
        if not data:
            sys.exit(0)  # the process ended normally
        what, last = data.decode(errors="replace").strip().splitlines()[-1], time.monotonic()
        paused = what == "PAUSE"
    elif not paused and time.monotonic() - last > timeout:
        sys.stderr.write(
            f"lrbs_tf: error: no progress for {time.monotonic() - last:.0f} s while {what}: "
            "another worker is gone, stuck or never started; stopping this worker (the "
            "chief's last checkpoint is kept: start all workers again to resume)\n")
        sys.stderr.flush()
        os.kill(parent, signal.SIGKILL)
        sys.exit(1)
"""

    def __init__(self, timeout: float, what: str):
        import subprocess

        self.timeout = float(timeout)
        self.what = what
        self.sent = 0.0
        self.process = subprocess.Popen(
            [sys.executable, "-c", self.CODE, str(os.getpid()), str(self.timeout), what],
            stdin=subprocess.PIPE, close_fds=True)

    def beat(self, what: str | None = None) -> None:
        now = time.monotonic()
        what = what or ("working" if self.what == "PAUSE" else self.what)
        if what == self.what and now - self.sent < 1.0:
            return
        self.what = what
        self.sent = now
        try:
            self.process.stdin.write(self.what.encode() + b"\n")
            self.process.stdin.flush()
        except (BrokenPipeError, ValueError):
            pass


def start_watchdog(timeout: float, what: str) -> Watchdog:
    """Start this process's :class:`Watchdog` (once; it lives until the process ends)."""
    global _watchdog
    if _watchdog is None:
        _watchdog = Watchdog(timeout, what)
    else:
        _watchdog.beat(what)
    return _watchdog


def pause_watchdog() -> None:
    """No collective work until the next :func:`heartbeat`: stop the watchdog's clock."""
    if _watchdog is not None:
        _watchdog.beat("PAUSE")


def heartbeat(what: str | None = None) -> None:
    """Tell the watchdog (if any) that this process is making progress."""
    if _watchdog is not None:
        _watchdog.beat(what)


# -- Keras 3 + MultiWorkerMirroredStrategy ------------------------------------------------

# Keras versions on which the work-around below was checked (tests/test_distribute.py fails
# when the installed version is outside, so the fix is re-examined on upgrade).
CHECKED_KERAS = ("3.10", "3.11", "3.12", "3.13", "3.14", "3.15")


def keras_multiworker_fix() -> None:
    """Make Keras 3 ``fit``/``evaluate`` run under MultiWorkerMirroredStrategy.

    Keras 3 (checked: 3.15.1) reduces the per-replica step logs of a multi-worker strategy with
    ``strategy.reduce("MEAN", scalar, axis=0)``, which fails ("Invalid reduction dimension 0
    for input with 0 dimensions"; keras-team/keras#20585, tensorflow/tensorflow#72388). This
    makes ``keras.src.backend.tensorflow.trainer._collective_all_reduce_multi_worker`` answer
    False, so step logs are reduced over the local replicas only (they feed the progress bar;
    the epoch metrics lrbs_tf records are read from the metric variables, summed over all
    workers). The other failure of #20585 (all-reducing the first batch) is avoided in
    :meth:`lrbs_tf.optimizers.RatioTrainStep._maybe_symbolic_build`.
    Raises :class:`DistributeError` if Keras no longer has the patched function.
    """
    import keras

    try:
        from keras.src.backend.tensorflow import trainer as keras_tf_trainer
    except ImportError as e:
        raise DistributeError(f"Keras {keras.version()} moved its TensorFlow trainer ({e}); "
                              "the multi-worker work-around needs review") from None
    current = getattr(keras_tf_trainer, "_collective_all_reduce_multi_worker", None)
    if current is None:
        raise DistributeError(f"Keras {keras.version()} has no _collective_all_reduce_multi_"
                              "worker; the multi-worker work-around needs review")
    if getattr(current, "lrbs_patched", False):
        return
    if not keras.version().startswith(CHECKED_KERAS):
        log.warning("Keras %s is newer than the versions the multi-worker work-around was "
                    "checked on (%s)", keras.version(), ", ".join(CHECKED_KERAS))

    def local_reduction(strategy):
        return False

    local_reduction.lrbs_patched = True
    keras_tf_trainer._collective_all_reduce_multi_worker = local_reduction
