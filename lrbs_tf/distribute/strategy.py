"""tf.distribute for lrbs_tf: choosing a strategy, logical CPU devices, chief-only writes.

* :func:`split_cpu` splits the CPU into N logical devices (to exercise multi-device code on a
  machine without GPUs); TensorFlow allows it only before its first operation.
* :func:`make_strategy` turns ``auto | none | mirrored | multiworker`` (+ devices) into a
  strategy: ``auto`` is MirroredStrategy when more than one GPU is visible, else none;
  ``multiworker`` is MultiWorkerMirroredStrategy from ``TF_CONFIG`` (see
  ``tools/launch_workers.py``), with a :class:`~lrbs_tf.distribute.watchdog.Watchdog` so
  that a missing or dead peer ends the process with a clear error instead of a hang.
* Under any strategy the batch size that sets the noise is the **global** batch, summed over
  replicas and workers: :class:`lrbs_tf.core.optimizers.RatioTrainStep` all-reduces it every step
  and reduces the loss as Σ(per-example loss) / global batch, so gradients, η and the reported
  S do not depend on the replica count.
* Keras 3's ``fit`` needs a narrow, version-guarded work-around under
  MultiWorkerMirroredStrategy (keras-team/keras#20585):
  :func:`lrbs_tf.compat.keras_multiworker_fix`.
"""

from __future__ import annotations

import contextlib
import logging

from lrbs_tf.distribute.cluster import STRATEGIES, DistributeError, chief_task, cluster_from_env
from lrbs_tf.distribute.watchdog import pause_watchdog, start_watchdog

log = logging.getLogger(__name__)

PEER_LOST_EXIT = 3  # exit status of a worker whose peers stopped answering


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
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(count)]
        )
    except RuntimeError as e:
        raise DistributeError(
            f"cannot split the CPU into {count} devices after TensorFlow has started ({e}); "
            "call lrbs_tf.distribute.split_cpu before any TensorFlow operation"
        ) from None


def make_strategy(
    name: str = "auto", devices: str | None = None, peer_timeout: float | None = None
):
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
        raise DistributeError(
            "--devices does not apply to --strategy multiworker: each worker "
            "uses its own devices; set CUDA_VISIBLE_DEVICES per worker"
        )
    return _multiworker(peer_timeout)


def _device_list(devices: str | None) -> list[str]:
    import tensorflow as tf

    if devices:
        chosen = [d.strip() for d in devices.split(",") if d.strip()]
        known = {_short(d.name) for d in tf.config.list_logical_devices()}
        missing = [d for d in chosen if _short(d) not in known]
        if missing:
            raise DistributeError(
                f"unknown device(s) {', '.join(missing)}; this machine has "
                f"{', '.join(sorted(known))}"
            )
        if len(set(chosen)) != len(chosen):
            raise DistributeError(f"--devices lists a device twice: {devices}")
        return chosen
    gpus = tf.config.list_logical_devices("GPU")
    chosen = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
    if len(chosen) < 2:
        log.warning(
            "MirroredStrategy with a single device (%s): split the CPU with "
            "--cpu-devices N to test multi-device code without GPUs",
            chosen[0],
        )
    return chosen


def _short(device: str) -> str:
    """``/job:localhost/replica:0/task:0/device:CPU:0`` or ``/device:CPU:0`` → ``/cpu:0``."""
    return "/" + device.lower().rsplit("/", 1)[-1].replace("device:", "")


def _multiworker(peer_timeout):
    import tensorflow as tf

    cluster = cluster_from_env()
    from lrbs_tf import compat

    try:
        compat.keras_multiworker_fix()
    except compat.KerasChanged as e:
        raise DistributeError(str(e)) from None
    timeout = float(peer_timeout or 300)
    start_watchdog(timeout, "waiting for the other workers to connect")
    options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=timeout)
    strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    pause_watchdog()
    log.info(
        "MultiWorkerMirroredStrategy: task %s:%d of %d worker(s), %d replica(s) in sync",
        cluster["type"],
        cluster["index"],
        len(cluster["workers"]) + len(cluster["chief"]),
        strategy.num_replicas_in_sync,
    )
    return strategy


def is_multiworker(strategy) -> bool:
    import tensorflow as tf

    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def is_chief(strategy) -> bool:
    """True where results are written: always without a multi-worker strategy; otherwise the
    task ``chief:0``, or ``worker:0`` when the cluster has no chief (:func:`chief_task`)."""
    return strategy is None or not is_multiworker(strategy) or chief_task()


def model_strategy(model):
    """The strategy ``model`` was built under, or None (one device)."""
    from lrbs_tf import compat

    strategy = compat.model_strategy(model)
    return strategy if strategy is not None and replicas(strategy) > 1 else None


def replicas(strategy) -> int:
    return 1 if strategy is None else int(strategy.num_replicas_in_sync)


def check_batches(smallest: int, strategy) -> None:
    """Every replica needs at least one example of every batch: refuse a schedule whose
    smallest batch has fewer examples than the strategy has replicas."""
    if smallest < replicas(strategy):
        raise DistributeError(
            f"the batch-size schedule reaches {smallest}, fewer examples than the "
            f"{replicas(strategy)} replicas: every replica needs at least one"
        )


def describe(strategy) -> dict:
    """What ran where, for ``config.json``."""
    if strategy is None:
        return {"strategy": "none", "replicas": 1}
    name = "MultiWorkerMirroredStrategy" if is_multiworker(strategy) else type(strategy).__name__
    out = {
        "strategy": name,
        "replicas": replicas(strategy),
        "devices": list(strategy.extended.worker_devices),
    }
    if is_multiworker(strategy):
        resolver = strategy.cluster_resolver
        out.update(
            workers=sum(len(v) for v in resolver.cluster_spec().as_dict().values()),
            task=f"{resolver.task_type}:{resolver.task_id}",
        )
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
    spread = sums[1] / n - mean**2
    if np.any(np.abs(spread) > 1e-9 * (1.0 + mean**2)):
        raise DistributeError(
            f"the workers disagree on {what}; with --strategy multiworker "
            "put --logdir on a file system every worker can read (the "
            "others resume from the chief's checkpoint)"
        )


def data_options():
    """tf.data options for datasets handed to a strategy: the data are in-memory tensors, so
    workers split the batches (``AutoShardPolicy.DATA``) instead of trying files first.

    tf.data's default static optimizations are off: rewriting a dataset's graph serialises the
    tensors its functions capture, which copies the whole training set (measured: 1 GB more
    resident for a 1 GB array); our pipelines prefetch and parallelise explicitly. A strategy's
    auto-sharding rewrites the graph too, so under a strategy the data are held twice."""
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_optimization.apply_default_optimizations = False
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return options


def scope(strategy):
    """``strategy.scope()``, or a no-op without a strategy."""
    return contextlib.nullcontext() if strategy is None else strategy.scope()
