"""One training run: settings → run folder → data → model → epochs → probes → results.

This is the only training loop of the toolkit. :func:`train` claims the run folder
(:mod:`lrbs_tf.training.runfolder`), loads the data and the strategy, and drives a :class:`Run`
through its stages: :meth:`~Run.start` (fresh, or from the last checkpoint),
:meth:`~Run.train_epochs` (one ``model.fit`` per epoch on that epoch's batches, so epochs with
different numbers of steps keep exact progress-bar totals and an epoch can be rebuilt from
``(seed, epoch)``), :meth:`~Run.probe` and :meth:`~Run.finish`. Every piece of a run's state is
created in ``Run.__init__``; ``results.json`` is written by :meth:`Run.write` only.

Nothing is lost when a run stops: after every epoch (and every ``checkpoint_steps`` steps if
asked) the weights, optimizer state and position are checkpointed
(:mod:`lrbs_tf.training.checkpoint`); the same command resumes from there, on the same data
order, schedule position, η/S wrapper state and TensorBoard step numbers. With
``deterministic=True`` a resumed run ends with the same weights, bit for bit, as one never
interrupted (``tests/test_resume.py``, ``tools/chaos.py``).

Under a ``tf.distribute`` strategy (``config.strategy``, see :mod:`lrbs_tf.distribute`) the
model, optimizer and metrics live in the strategy's scope, S is the global batch, and with
several workers only the chief writes the run folder: the others run the same steps (their
collectives must match) writing into a scratch folder, and resume from the chief's checkpoint.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile

import keras
import tensorflow as tf

from lrbs_tf import distribute
from lrbs_tf.data.datasets import load_for
from lrbs_tf.training import engine, runfolder, runio, runlock, signals
from lrbs_tf.training.config import RunConfig
from lrbs_tf.training.runfolder import RunExistsError
from lrbs_tf.training.runstate import Run
from lrbs_tf.training.signals import RunInterrupted  # noqa: F401 (raised by train)

log = logging.getLogger(__name__)
PROGRESS = ("bar", "epoch", "none")


def train(
    config: RunConfig, callbacks=(), model: keras.Model | None = None, progress: str = "bar"
) -> dict:
    """Run ``config`` to the end and return the results (also written to ``results.json``).

    Repeating the same config resumes from the last checkpoint, or returns the results of a
    finished run. Ctrl-C or SIGTERM saves a checkpoint, marks the run ``interrupted`` and
    raises :class:`RunInterrupted` (a ``KeyboardInterrupt``; see
    :mod:`lrbs_tf.training.signals`); any other error marks it ``failed`` and propagates.
    Extra Keras ``callbacks`` join the run's own (they are not part of the recorded config).
    ``model`` replaces the registry's ``config.model`` (it is compiled here); the config should
    still name it, since resuming and probing a saved run rebuild from the config. ``progress``:
    ``bar`` (Keras' per-step progress bar), ``epoch`` (one log line per epoch on the ``lrbs_tf``
    logger) or ``none``.
    """
    if progress not in PROGRESS:
        raise ValueError(f"progress must be one of {PROGRESS}, got {progress!r}")
    config.validate()
    chief = distribute.chief_task() if config.strategy == "multiworker" else True
    with signals.graceful():
        found = _claim(config) if chief else runfolder.inspect(config)
        try:
            return _run(config, found, chief, callbacks, model, progress)
        finally:
            if chief:
                runio.free_reserve(config.run_dir)  # held only while the run is under way
                runlock.release(config.run_dir)


def _run(config, found, chief, callbacks, model, progress) -> dict:
    if found.mode == "finished":
        log.info("%s is already finished", config.run_dir)
        if found.results.get("model_sha1") is None:
            _check_legacy_model(config.run_dir, found.results)
        return found.results
    if config.resume and found.mode != "resume":
        raise RunExistsError(f"nothing to resume in {config.run_dir}")
    if config.cpu_devices:
        distribute.split_cpu(config.cpu_devices)
    strategy = distribute.make_strategy(config.strategy, config.devices, config.peer_timeout)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(config.seed)
    data = load_for(config)
    # Workers other than the chief run the same steps (their collectives must match) but
    # write into a scratch folder.
    run_dir = config.run_dir if chief else tempfile.mkdtemp(prefix="lrbs-worker-")
    try:
        run = Run(config, data, run_dir, strategy, model, callbacks, progress)
        results = run.go(resume=found.mode == "resume", load_dir=config.run_dir)
        return results if chief else dict(results, chief=False)
    finally:
        if not chief:
            shutil.rmtree(run_dir, ignore_errors=True)


def _claim(config: RunConfig):
    """Lock and inspect (or create) the run folder; see :mod:`lrbs_tf.training.runfolder`."""
    found = runfolder.claim(config)
    if found.mode != "finished":
        try:
            runio.reserve(config.run_dir)
        except BaseException:
            runlock.release(config.run_dir)
            raise
    return found


def _check_legacy_model(run_dir: str, results: dict) -> None:
    """A finished run saved before model digests were recorded: compare the weights of its
    model.keras with the recorded weights digest."""
    from lrbs_tf.models.registry import load_model

    try:
        model = load_model(os.path.join(run_dir, "model.keras"), compile=False)
    except Exception as e:  # a truncated zip or h5 raises many types
        raise runfolder.RunDamagedError(
            f"{run_dir} is damaged: model.keras cannot be loaded ({type(e).__name__})"
            + runfolder.OVERWRITE_NOTE
        ) from None
    if results.get("weights_sha1") not in (None, engine.weights_digest(model)):
        raise runfolder.RunDamagedError(
            f"{run_dir} is damaged: the weights in model.keras do not match the digest in "
            "results.json" + runfolder.OVERWRITE_NOTE
        )
