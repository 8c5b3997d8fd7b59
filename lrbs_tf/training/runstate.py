"""The state and stages of one training run (see :func:`lrbs_tf.training.run.train`).

Every attribute of a :class:`Run` is created in its ``__init__`` (``tests/test_layout.py``
checks it); the stages are its methods: :meth:`~Run.start`, :meth:`~Run.train_epochs`,
:meth:`~Run.probe`, :meth:`~Run.finish`; ``results.json`` is written by :meth:`~Run.write`
only (and, on a failure, by :meth:`~Run.record_failure`).
"""

from __future__ import annotations

import logging
import os
import shutil
import time

import numpy as np

from lrbs_tf import distribute
from lrbs_tf.probes.callbacks import write_scalars
from lrbs_tf.training import checkpoint, engine, epochs, runio
from lrbs_tf.training.config import RunConfig
from lrbs_tf.training.parts import assemble
from lrbs_tf.training.results import RunResults

log = logging.getLogger(__name__)


class RunInterrupted(RuntimeError):
    """Training was interrupted (Ctrl-C); the state is saved and the run can be resumed."""


class Run:
    """One run's state, all of it created here; the stages are its methods."""

    def __init__(
        self,
        config: RunConfig,
        data,
        run_dir: str,
        strategy=None,
        model=None,
        extra_callbacks=(),
        progress: str = "bar",
    ):
        self.config, self.data, self.run_dir, self.strategy = config, data, run_dir, strategy
        replicas = distribute.replicas(strategy)
        self.plan = config.plan()
        self.plans = engine.EpochPlans(
            self.plan, len(data.train), config.epochs, min_batch=replicas
        )
        if self.plans.smallest() < replicas:
            raise distribute.DistributeError(
                f"the batch-size schedule reaches {self.plans.smallest()}, fewer examples than "
                f"the {replicas} replicas: every replica needs at least one"
            )
        self.jit = engine.choose_jit(config, self.plans) and not config.deterministic
        self.spe = engine.choose_steps_per_execution(config, self.plans)
        if strategy is not None:  # both fail under a strategy in Keras 3 (keras#19246)
            if config.jit_compile == "on" or (config.steps_per_execution or 1) > 1:
                log.warning(
                    "XLA and steps_per_execution > 1 are off under %s", type(strategy).__name__
                )
            self.jit, self.spe = False, 1
        self.results_path = os.path.join(run_dir, "results.json")
        self.ckpt_dir = os.path.join(run_dir, "ckpt")
        self.parts = assemble(
            config,
            data,
            run_dir,
            self.plans,
            self.jit,
            self.spe,
            strategy,
            model,
            extra_callbacks,
            self.save_position,
            lr_at=lambda e: self.lr_at(e + 0.999),
            progress=progress,
        )
        self.verbose = 1 if progress == "bar" else 0  # for Keras' fit
        self.model = self.parts.model
        self.results = RunResults(
            run_dir=os.path.abspath(run_dir),
            distribute=distribute.describe(strategy),
            data_source=data.info.get("source"),
            synthetic_data=bool(data.info.get("synthetic")) or None,
        )
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
                raise RunInterrupted(
                    f"interrupted: state saved in {self.run_dir}; run the same command to resume"
                ) from None
            except BaseException as e:
                self.record_failure(e)
                if runio.disk_full(e):
                    raise runio.DiskFullError(
                        28,
                        f"the disk of {self.run_dir} is full "
                        f"({getattr(e, 'strerror', None) or type(e).__name__}); the run is "
                        "marked failed and the same command resumes it from its last "
                        "checkpoint once there is space",
                    ) from None
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
            log.info(
                "resuming %s at epoch %d, batch %d", self.run_dir, position[0] + 1, position[1]
            )
        if self.parts.growth is not None:  # the batch sizes decided before a resume
            decisions = [r["growth"] for r in self.results.epochs if r.get("growth")]
            for decision in decisions:
                self.plan.adaptive.decided[decision["epoch"]] = decision["next_batch_size"]
            self.parts.growth.restore(decisions)
            self.plans.invalidate()
        if self.parts.probe_every is not None:  # its measurements are kept in the results
            self.parts.probe_every.history[:] = self.results.probe_history or []
            self.results.probe_history = self.parts.probe_every.history
        if distribute.is_multiworker(self.strategy):
            distribute.check_workers_agree(
                self.strategy,
                [
                    position[0],
                    position[1],
                    sum(float(np.sum(w.numpy(), dtype=np.float64)) for w in self.model.weights),
                ],
                "where the run starts (epoch, step and weights)",
            )
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
        log.info("probing curvature and gradient noise on %d examples", self.config.probe.examples)
        done = len(self.results.epochs)
        measured = prober(lr=self.lr_at(done - 0.001))
        self.results.probe = dict(measured, settings=prober.describe())
        streamed = self.parts.probe_every.history if self.parts.probe_every else []
        if not streamed or streamed[-1]["epoch"] != done:  # one TensorBoard point per epoch
            write_scalars(self.parts.writers["probe"], measured, done)

    def finish(self) -> dict:
        """The summary, the loss at the final weights, model.keras, the final results.json."""
        results, config = self.results, self.config
        results.summarize()
        if not results.diverged and results.epochs:
            last = results.epochs[-1]
            at_weights = (
                {"loss": last["weights_loss"], "accuracy": last["weights_accuracy"]}
                if "weights_loss" in last
                else self.train_set_loss()
            )
            results.final_weights_loss = at_weights["loss"]
            results.final_weights_accuracy = at_weights["accuracy"]
        if config.loss_target is not None:
            results.loss_target = config.loss_target
            results.loss_target_reached = bool(results.loss_target_reached)
            results.loss_reached = results.final_weights_loss
        examples = sum(sum(self.plans[r["epoch"] - 1][0][: r["steps"]]) for r in results.epochs)
        results.epochs_trained = examples / len(self.data.train)
        results.examples_per_second = examples / results.train_time if results.train_time else None
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
        runio.write_json(
            os.path.join(self.run_dir, "config.json"),
            {
                "config": self.config.to_dict(),
                "jit_compile": self.jit,
                "steps_per_execution": self.spe,
                "deterministic": deterministic,
                "determinism_note": (
                    "op determinism on (tf.config.experimental.enable_op_determinism), XLA off: "
                    "repeated and resumed runs give bitwise-identical weights and metrics on the "
                    "same machine and thread count"
                    if deterministic
                    else "not deterministic: TensorFlow may choose non-deterministic kernels; use "
                    "--deterministic for bitwise-repeatable runs"
                ),
                "data": self.data.info,
                "distribute": distribute.describe(self.strategy),
                "versions": runio.versions(),
            },
        )

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
        failed = dict(
            self.results.to_dict(),
            status="failed",
            epochs=self.results.epochs[: self.checkpointed],
            error=f"{type(error).__name__}: {error}"[:2000],
        )
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
