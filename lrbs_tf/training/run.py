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
import time

import keras
import numpy as np
import tensorflow as tf

from lrbs_tf import distribute
from lrbs_tf.data.datasets import load_dataset
from lrbs_tf.training import checkpoint, engine, epochs, runfolder, runio
from lrbs_tf.training.config import RunConfig
from lrbs_tf.training.parts import assemble
from lrbs_tf.training.results import RunResults
from lrbs_tf.training.runfolder import RunExistsError

log = logging.getLogger(__name__)


class RunInterrupted(RuntimeError):
    """Training was interrupted (Ctrl-C); the state is saved and the run can be resumed."""


def train(config: RunConfig, callbacks=(), model: keras.Model | None = None) -> dict:
    """Run ``config`` to the end and return the results (also written to ``results.json``).

    Repeating the same config resumes from the last checkpoint, or returns the results of a
    finished run. Ctrl-C saves a checkpoint, marks the run ``interrupted`` and raises
    :class:`RunInterrupted`; any other error marks it ``failed`` and propagates. Extra Keras
    ``callbacks`` join the run's own (they are not part of the recorded config). ``model``
    replaces the registry's ``config.model`` (it is compiled here); the config should still
    name it, since resuming and probing a saved run rebuild from the config.
    """
    config.validate()
    chief = distribute.chief_task() if config.strategy == "multiworker" else True
    found = _claim(config) if chief else runfolder.inspect(config)
    try:
        if found.mode == "finished":
            log.info("%s is already finished", config.run_dir)
            if found.results.get("model_sha1") is None:
                _check_legacy_model(config.run_dir, found.results)
            return found.results
        if config.resume and found.mode != "resume":
            raise RunExistsError(f"nothing to resume in {config.run_dir}")
        if config.cpu_devices:
            distribute.split_cpu(config.cpu_devices)
        strategy = distribute.make_strategy(config.strategy, config.devices,
                                            config.peer_timeout)
        if config.deterministic:
            tf.config.experimental.enable_op_determinism()
        keras.utils.set_random_seed(config.seed)
        data = load_dataset(config.dataset, data_dir=config.data_dir,
                            validation_size=config.val_size, train_size=config.train_size,
                            seed=config.seed)
        # Workers other than the chief run the same steps (their collectives must match) but
        # write into a scratch folder.
        run_dir = config.run_dir if chief else tempfile.mkdtemp(prefix="lrbs-worker-")
        try:
            run = Run(config, data, run_dir, strategy, model, callbacks)
            results = run.go(resume=found.mode == "resume", load_dir=config.run_dir)
            return results if chief else dict(results, chief=False)
        finally:
            if not chief:
                shutil.rmtree(run_dir, ignore_errors=True)
    finally:
        if chief:
            runfolder.release(config.run_dir)


def _claim(config: RunConfig):
    """Lock and inspect (or create) the run folder; see :mod:`lrbs_tf.training.runfolder`."""
    found = runfolder.claim(config)
    if found.mode != "finished":
        try:
            runio.reserve(config.run_dir)
        except BaseException:
            runfolder.release(config.run_dir)
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
            + runfolder.OVERWRITE_NOTE) from None
    if results.get("weights_sha1") not in (None, engine.weights_digest(model)):
        raise runfolder.RunDamagedError(
            f"{run_dir} is damaged: the weights in model.keras do not match the digest in "
            "results.json" + runfolder.OVERWRITE_NOTE)


class Run:
    """One run's state, all of it created here; the stages are its methods."""

    def __init__(self, config: RunConfig, data, run_dir: str, strategy=None, model=None,
                 extra_callbacks=()):
        self.config, self.data, self.run_dir, self.strategy = config, data, run_dir, strategy
        replicas = distribute.replicas(strategy)
        self.plan = config.plan()
        self.plans = engine.EpochPlans(self.plan, len(data.train), config.epochs,
                                       min_batch=replicas)
        if self.plans.smallest() < replicas:
            raise distribute.DistributeError(
                f"the batch-size schedule reaches {self.plans.smallest()}, fewer examples than "
                f"the {replicas} replicas: every replica needs at least one")
        self.jit = engine.choose_jit(config, self.plans) and not config.deterministic
        self.spe = engine.choose_steps_per_execution(config, self.plans)
        if strategy is not None:  # both fail under a strategy in Keras 3 (keras#19246)
            if config.jit_compile == "on" or (config.steps_per_execution or 1) > 1:
                log.warning("XLA and steps_per_execution > 1 are off under %s",
                            type(strategy).__name__)
            self.jit, self.spe = False, 1
        self.results_path = os.path.join(run_dir, "results.json")
        self.ckpt_dir = os.path.join(run_dir, "ckpt")
        self.parts = assemble(config, data, run_dir, self.plans, self.jit, self.spe, strategy,
                              model, extra_callbacks, self.save_position,
                              lr_at=lambda e: self.lr_at(e + 0.999))
        self.model = self.parts.model
        self.results = RunResults(run_dir=os.path.abspath(run_dir),
                                  distribute=distribute.describe(strategy))
        self.epoch = 0  # the epoch being trained (0-based)
        self.checkpointed = 0  # epochs the last checkpoint holds
        self.session_start = time.time()
        self.wall_before = 0.0  # seconds spent in earlier sessions of a resumed run

    # -- stages ------------------------------------------------------------------------------
    def go(self, resume: bool, load_dir: str) -> dict:
        """All stages; a failure marks the run ``failed``, Ctrl-C ``interrupted``."""
        try:
            distribute.heartbeat("building the model")
            position = self.start(resume, load_dir)
            try:
                self.train_epochs(*position)
                self.probe()
                return self.finish()
            except KeyboardInterrupt:
                self.save_position()
                self.results.status = "interrupted"
                self.write()
                raise RunInterrupted(f"interrupted: state saved in {self.run_dir}; run the "
                                     "same command to resume") from None
            except BaseException as e:
                self.record_failure(e)
                if runio.disk_full(e):
                    raise runio.DiskFullError(
                        28, f"the disk of {self.run_dir} is full "
                            f"({getattr(e, 'strerror', None) or type(e).__name__}); the run is "
                            "marked failed and the same command resumes it from its last "
                            "checkpoint once there is space") from None
                raise
            finally:
                for writer in self.parts.writers.values():
                    writer.close()
        finally:
            distribute.pause_watchdog()

    def start(self, resume: bool, load_dir: str) -> tuple:
        """Fresh (config.json and the first results.json) or from the last checkpoint; returns
        ``(epoch, batch, metric values)`` to continue from."""
        state = checkpoint.load(os.path.join(load_dir, "ckpt"), self.model) if resume else None
        if state is None:
            self.write_config()
            position = (0, 0, None)
        else:
            saved = RunResults.from_dict(state["results"])
            saved.status, saved.distribute = "running", self.results.distribute
            saved.resumed += 1
            self.results = saved
            position = (state["epoch"], state["batch"], state["metrics"])
            log.info("resuming %s at epoch %d, batch %d", self.run_dir, position[0] + 1,
                     position[1])
        if self.parts.probe_every is not None:  # its measurements are kept in the results
            self.parts.probe_every.history[:] = self.results.probe_history or []
            self.results.probe_history = self.parts.probe_every.history
        if distribute.is_multiworker(self.strategy):
            distribute.check_workers_agree(
                self.strategy, [position[0], position[1], sum(
                    float(np.sum(w.numpy(), dtype=np.float64)) for w in self.model.weights)],
                "where the run starts (epoch, step and weights)")
        self.wall_before = self.results.wall_time
        self.checkpointed = len(self.results.epochs)
        self.write()
        return position

    def train_epochs(self, start_epoch: int, start_batch: int, metrics) -> None:
        """Epoch after epoch until the last, divergence or the loss target."""
        epochs.train(self, start_epoch, start_batch, metrics)

    def probe(self) -> None:
        """Curvature and gradient noise at the final weights (``config.probe``)."""
        prober = self.parts.prober
        if prober is None or self.results.diverged:
            return
        log.info("probing curvature and gradient noise on %d examples",
                 self.config.probe.examples)
        done = len(self.results.epochs)
        measured = prober(lr=self.lr_at(done - 0.001))
        self.results.probe = dict(measured, settings=prober.describe())
        prober.write_scalars(self.parts.writers["probe"], measured, done)

    def finish(self) -> dict:
        """The summary, the loss at the final weights, model.keras, the final results.json."""
        results, config = self.results, self.config
        results.summarize()
        if not results.diverged and results.epochs:
            last = results.epochs[-1]
            at_weights = ({"loss": last["weights_loss"], "accuracy": last["weights_accuracy"]}
                          if "weights_loss" in last else self.train_set_loss())
            results.final_weights_loss = at_weights["loss"]
            results.final_weights_accuracy = at_weights["accuracy"]
        if config.loss_target is not None:
            results.loss_target = config.loss_target
            results.loss_target_reached = bool(results.loss_target_reached)
            results.loss_reached = results.final_weights_loss
        examples = sum(sum(self.plans[r["epoch"] - 1][0][:r["steps"]]) for r in results.epochs)
        results.epochs_trained = examples / len(self.data.train)
        results.examples_per_second = (examples / results.train_time if results.train_time
                                       else None)
        results.status = "diverged" if results.diverged else "finished"
        results.weights_sha1 = engine.weights_digest(self.model)
        results.wall_time = self.wall_time()
        saved = engine.save_model(self.model, os.path.join(self.run_dir, "model.keras"))
        results.model_bytes, results.model_sha1 = saved["model_bytes"], saved["model_sha1"]
        self.write()
        shutil.rmtree(self.ckpt_dir, ignore_errors=True)
        runio.free_reserve(self.run_dir)
        return results.to_dict()

    # -- files -------------------------------------------------------------------------------
    def write(self) -> None:
        """Write results.json (the only place that does)."""
        runio.write_json(self.results_path, self.results.to_dict())

    def write_config(self) -> None:
        deterministic = self.config.deterministic
        runio.write_json(os.path.join(self.run_dir, "config.json"), {
            "config": self.config.to_dict(),
            "jit_compile": self.jit,
            "steps_per_execution": self.spe,
            "deterministic": deterministic,
            "determinism_note": (
                "op determinism on (tf.config.experimental.enable_op_determinism), XLA off: "
                "repeated and resumed runs give bitwise-identical weights and metrics on the "
                "same machine and thread count" if deterministic else
                "not deterministic: TensorFlow may choose non-deterministic kernels; use "
                "--deterministic for bitwise-repeatable runs"),
            "data": self.data.info,
            "distribute": distribute.describe(self.strategy),
            "versions": runio.versions(),
        })

    def save_position(self) -> None:
        """Checkpoint at the current step; TensorBoard rows recorded so far are written first."""
        self.parts.step_scalars.flush()
        done = int(self.model.optimizer.iterations.numpy()) - self.plans.steps_before(self.epoch)
        checkpoint.save(self.ckpt_dir, self.model, self.epoch, done, self.results.to_dict())
        self.checkpointed = len(self.results.epochs)

    def checkpoint_epoch_end(self) -> None:
        checkpoint.save(self.ckpt_dir, self.model, self.epoch, 0, self.results.to_dict())
        self.checkpointed = len(self.results.epochs)
        self.write()

    def record_failure(self, error: BaseException) -> None:
        """Mark the run ``failed`` with the reason; the epochs recorded are those of the last
        checkpoint, so that the folder stays resumable. On a full disk the reserve is freed
        first, to make room for this last write."""
        if runio.disk_full(error):
            runio.free_reserve(self.run_dir)
        failed = dict(self.results.to_dict(), status="failed",
                      epochs=self.results.epochs[:self.checkpointed],
                      error=f"{type(error).__name__}: {error}"[:2000])
        try:
            runio.write_json(self.results_path, failed)
        except OSError as e:
            log.error("could not record the failure in %s: %s", self.results_path, e)

    # -- measurements ------------------------------------------------------------------------
    def train_set_loss(self) -> dict:
        """Loss and accuracy over the whole training set at the current weights, BatchNorm in
        inference mode (as the probes see the model); one compiled pass."""
        with distribute.scope(self.strategy):
            return self.parts.train_set_loss()

    def lr_at(self, t: float) -> float:
        """η of a full-size step at progress ``t`` (epochs)."""
        return self.plan.ratio_at(t) * self.plan.batch_at(t)

    def wall_time(self) -> float:
        """Seconds spent on this run, over all sessions if it was resumed."""
        return self.wall_before + time.time() - self.session_start
