"""The state and stages of one training run (see :func:`lrbs_tf.training.run.train`).

Every attribute of a :class:`Run` is created in its ``__init__`` (``tests/test_layout.py``
checks it). The stages are its methods, in order: :meth:`~Run.start` (fresh, or from the last
checkpoint), :meth:`~Run.train_epochs` — for each epoch :meth:`~Run.train_epoch` (one
``model.fit`` of that epoch's batches), :meth:`~Run.measure_epoch` (validation, test, the loss
at the weights, the streaming probe, the next batch size: measurements only, nothing recorded)
and :meth:`~Run.commit_epoch` (TensorBoard, the record, the checkpoint, as one section that a
stop does not cut) — then :meth:`~Run.probe` and :meth:`~Run.finish`. ``results.json`` is
written by :meth:`~Run.write` only (and, on a failure, by :meth:`~Run.record_failure`).

A stop (Ctrl-C or SIGTERM, :mod:`lrbs_tf.training.signals`) saves a checkpoint that says how
far the epoch got: in its steps (Keras' running metrics as they are), after its steps (the
metrics as the steps left them, kept before any evaluation resets them), or after its record
(the next epoch). Resuming from any of these writes exactly the record an uninterrupted run
writes.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import shutil
import time

import numpy as np

from lrbs_tf import distribute
from lrbs_tf.probes.callbacks import report_probe, write_scalars
from lrbs_tf.training import callbacks as cb
from lrbs_tf.training import checkpoint, engine, runio, signals
from lrbs_tf.training.config import RunConfig
from lrbs_tf.training.parts import assemble
from lrbs_tf.training.results import EpochRecord, RunResults

log = logging.getLogger(__name__)

# The loss target is checked after every epoch, and also CHECKS_NEAR_TARGET times within an
# epoch once the last check was within NEAR_TARGET × the target. Measured on the Fashion-MNIST
# MLP: near 0.05 the training-set loss falls 25-30 % per epoch at η/S = 1e-4 and 2e-3, so
# epoch-end checks alone stop runs anywhere in [0.035, 0.05]; one check costs about 0.3 s (a
# forward pass over 50000 examples), a quarter of an epoch at S = 1000.
NEAR_TARGET, CHECKS_NEAR_TARGET = 2.0, 4


@dataclasses.dataclass
class Position:
    """Where a run continues: the 0-based epoch, its batches already done, Keras' running
    metric values (to continue the epoch's means), and whether all its steps are done."""

    epoch: int = 0
    batch: int = 0
    metrics: list | None = None
    trained: bool = False


@dataclasses.dataclass
class Trained:
    """What an epoch's steps produced: Keras' epoch logs, the steps taken, the loss-target
    measurement that stopped it early (if one did) and the seconds spent."""

    logs: dict
    steps: int
    reached: dict | None = None
    seconds: float = 0.0


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
            progress=progress,
        )
        self.verbose = 1 if progress == "bar" else 0  # for Keras' fit
        self.epoch_lines = progress != "none"
        self.model = self.parts.model
        self.results = RunResults(
            run_dir=os.path.abspath(run_dir),
            distribute=distribute.describe(strategy),
            data_source=data.info.get("source"),
            synthetic_data=bool(data.info.get("synthetic")) or None,
        )
        self.epoch = 0  # the epoch being trained (0-based)
        self.trained_metrics = None  # Keras' metric values once the epoch's steps are done
        self.checkpointed = 0  # epochs the last checkpoint holds
        self.session_start = time.time()
        self.wall_before = 0.0  # seconds spent in earlier sessions of a resumed run

    # -- stages ------------------------------------------------------------------------------
    def go(self, resume: bool, load_dir: str) -> dict:
        """All stages; a failure marks the run ``failed``, a stop ``interrupted``."""
        try:
            distribute.heartbeat("building the model")
            position = self.start(resume, load_dir)
            try:
                self.train_epochs(position)
                self.probe()
                with signals.deferred():
                    return self.finish()
            except KeyboardInterrupt as stop:
                raise self.interrupted(stop) from None
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

    def interrupted(self, stop: BaseException) -> signals.RunInterrupted:
        """Save the state after a stop (a second stop does not cut the save short); the
        exception to raise."""
        signum = signals.signum_of(stop)
        if self.results.status in ("finished", "diverged"):  # stopped during its last writes
            return signals.RunInterrupted(
                f"interrupted after the run ended ({self.results.status}): nothing lost, its "
                f"results are in {self.run_dir}",
                signum,
            )
        with signals.deferred(swallow=True):
            self.save_position()
            self.results.status = "interrupted"
            self.write()
        return signals.RunInterrupted(
            f"interrupted: state saved in {self.run_dir}; run the same command to resume",
            signum,
        )

    def start(self, resume: bool, load_dir: str) -> Position:
        """Fresh (config.json and the first results.json) or from the last checkpoint; returns
        where to continue."""
        state = checkpoint.load(os.path.join(load_dir, "ckpt"), self.model) if resume else None
        if state is None:
            self.write_config()
            position = Position()
        else:
            saved = RunResults.from_dict(state["results"])
            saved.status, saved.distribute = "running", self.results.distribute
            saved.run_dir = self.results.run_dir  # where the folder is now
            saved.resumed += 1
            self.results = saved
            position = Position(
                state["epoch"], state["batch"], state["metrics"], bool(state.get("trained"))
            )
            log.info(
                "resuming %s at epoch %d, batch %d",
                self.run_dir,
                position.epoch + 1,
                position.batch,
            )
        if self.parts.growth is not None:  # the batch sizes decided before a resume
            decisions = [r["growth"] for r in self.results.epochs if r.get("growth")]
            for decision in decisions:
                self.plans.decide(decision["epoch"], decision["next_batch_size"])
            self.parts.growth.restore(decisions)
        if distribute.is_multiworker(self.strategy):
            distribute.check_workers_agree(
                self.strategy,
                [
                    position.epoch,
                    position.batch,
                    sum(float(np.sum(w.numpy(), dtype=np.float64)) for w in self.model.weights),
                ],
                "where the run starts (epoch, step and weights)",
            )
        self.wall_before = self.results.wall_time
        self.checkpointed = len(self.results.epochs)
        self.epoch = position.epoch  # also when training is over and only the last stages remain
        self.write()
        return position

    def train_epochs(self, position: Position) -> None:
        """Epoch after epoch until the last, divergence or the loss target."""
        for epoch in range(position.epoch, self.config.epochs):
            if self.results.diverged or self.results.loss_target_reached:
                return  # a run stopped after its training ended: only the final stages remain
            self.epoch = epoch
            trained = self.train_epoch(epoch, position if epoch == position.epoch else None)
            record, probed = self.measure_epoch(epoch, trained)
            with signals.deferred():
                self.commit_epoch(record, probed, trained.seconds)

    def train_epoch(self, epoch: int, position: Position | None) -> Trained:
        """The steps of ``epoch`` (from ``position`` when resumed in it): one ``fit``."""
        sizes, ratios = self.plans[epoch]
        skip = position.batch if position is not None else 0
        metrics = position.metrics if position is not None else None
        self.trained_metrics = None
        if position is not None and (position.trained or skip >= len(sizes)):
            # stopped after the epoch's steps: its logs are the metrics the steps left
            checkpoint.restore_metrics(self.model, metrics)
            logs = {k: float(v) for k, v in self.model.get_metrics_result().items()}
            self.trained_metrics = checkpoint.metric_values(self.model)
            return Trained(logs, skip)
        extra = [cb.RestoreMetrics(metrics)] if skip and metrics else []
        check = None
        target = self.config.loss_target
        if target is not None and near_target(self.results.epochs, target):
            check = cb.StopAtLoss(
                self.train_set_loss,
                target,
                start=skip,
                every=math.ceil(len(sizes) / CHECKS_NEAR_TARGET),
            )
            extra.append(check)
        tick = time.time()
        before = self.iterations() - skip
        history = engine.fit_epoch(
            self.model,
            self.parts.train_data,
            sizes,
            epoch,
            self.parts.callbacks + extra,
            ratios=ratios,
            skip_batches=skip,
            verbose=self.verbose,
        )
        seconds = time.time() - tick
        self.results.train_time += seconds
        # kept before any evaluation resets them: a stop from here on resumes after the steps
        self.trained_metrics = checkpoint.metric_values(self.model)
        logs = {k: float(v[-1]) for k, v in history.history.items()}
        return Trained(logs, self.iterations() - before, check and check.reached, seconds)

    def measure_epoch(self, epoch: int, trained: Trained) -> tuple[EpochRecord, dict | None]:
        """The epoch's record and streaming probe: measured, not yet recorded anywhere."""
        sizes = self.plans[epoch].sizes
        logs, config = trained.logs, self.config
        record = EpochRecord(epoch + 1, trained.steps, logs.get("loss"), logs.get("accuracy"))
        if trained.steps < len(sizes):  # stopped at the loss target within the epoch
            record.fraction = sum(sizes[: trained.steps]) / sum(sizes)
        if not math.isfinite(record.train_loss):
            return record, None
        parts, quiet = self.parts, dict(verbose=0, return_dict=True)
        val = self.model.evaluate(parts.val_ds, callbacks=parts.eval_callbacks, **quiet)
        test = self.model.evaluate(parts.test_ds, callbacks=parts.heartbeat, **quiet)
        record.validation_loss, record.validation_accuracy = val["loss"], val["accuracy"]
        record.test_loss, record.test_accuracy = float(test["loss"]), float(test["accuracy"])
        target = config.loss_target
        if target is not None:  # the stop test reads the weights that are saved
            at_weights = trained.reached or self.train_set_loss()
            record.weights_loss = at_weights["loss"]
            record.weights_accuracy = at_weights["accuracy"]
        reached = target is not None and record.weights_loss <= target
        probed = None
        if config.probe_every and (epoch + 1) % config.probe_every == 0:
            prober = self.parts.prober
            log.info(
                "probing sharpness after epoch %d on %d examples (S = %s)",
                epoch + 1,
                prober.settings.examples,
                prober.step_batch or "none",
            )
            probed = dict(prober(lr=self.lr_at(epoch + 0.999)), epoch=epoch + 1)
            report_probe(probed, epoch + 1)
        if self.parts.growth is not None and epoch + 1 < config.epochs and not reached:
            record.growth = self.parts.growth.decide(epoch)  # the next S, at the same η/S
        return record, probed

    def commit_epoch(self, record: EpochRecord, probed: dict | None, seconds: float) -> None:
        """Record the epoch (TensorBoard, results, the next batch size) and checkpoint it; a
        stop waits until this is done (:class:`~lrbs_tf.training.signals.deferred`)."""
        results, parts, target = self.results, self.parts, self.config.loss_target
        record.wall_time = self.wall_time()
        epoch_summaries(parts.writers, record, parts.marks)
        if probed is not None:
            results.probe_history = [*(results.probe_history or []), probed]
            if record.epoch > parts.marks.get("probe"):
                write_scalars(parts.writers["probe"], probed, record.epoch)
                parts.marks.set("probe", record.epoch)
        results.add(record)
        self.trained_metrics = None  # the epoch is over: a stop from here saves the next one
        if self.epoch_lines:
            epoch_line(record, self.config, seconds)
        if record.growth:
            self.plans.decide(record.epoch, record.growth["next_batch_size"])
        if not math.isfinite(record.train_loss):
            results.diverged, results.diverged_epoch = True, record.epoch
            log.warning("loss became non-finite in epoch %d: stopping", record.epoch)
            return
        self.epoch = record.epoch
        if target is not None and record.weights_loss <= target:
            results.loss_target_reached, results.loss_target_epoch = True, record.epoch
            log.info(
                "training-set loss %.4g at the weights reached the target %g in epoch %d",
                record.weights_loss,
                target,
                record.epoch,
            )
            return
        self.checkpoint_epoch_end()

    def probe(self) -> None:
        """Curvature and gradient noise at the final weights (``config.probe``)."""
        prober = self.parts.prober
        if prober is None or self.results.diverged:
            return
        log.info("probing curvature and gradient noise on %d examples", self.config.probe.examples)
        done = len(self.results.epochs)
        measured = prober(lr=self.lr_at(done - 0.001))
        self.results.probe = dict(measured, settings=prober.describe())
        with signals.deferred():  # one TensorBoard point per epoch
            if done > self.parts.marks.get("probe"):
                write_scalars(self.parts.writers["probe"], measured, done)
                self.parts.marks.set("probe", done)

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
        examples = sum(sum(self.plans[r["epoch"] - 1].sizes[: r["steps"]]) for r in results.epochs)
        results.epochs_trained = examples / len(self.data.train)
        results.examples_per_second = examples / results.train_time if results.train_time else None
        results.status = "diverged" if results.diverged else "finished"
        results.weights_sha1 = engine.weights_digest(self.model)
        results.wall_time = self.wall_time()
        saved = engine.save_model(self.model, os.path.join(self.run_dir, "model.keras"))
        results.model_bytes, results.model_sha1 = saved["model_bytes"], saved["model_sha1"]
        self.write()
        if os.path.isdir(self.ckpt_dir) and not os.path.islink(self.ckpt_dir):
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
        """Checkpoint where the run is now: in the current epoch's steps, after them, or (its
        record written) at the start of the next epoch. TensorBoard rows go first."""
        self.parts.step_scalars.flush()
        epoch, metrics, trained = self.epoch, None, False
        if len(self.results.epochs) > epoch:  # the epoch is recorded: the next one is due
            epoch, done = epoch + 1, 0
        else:
            done = self.iterations() - self.plans.steps_before(epoch)
            trained = self.trained_metrics is not None
            metrics = self.trained_metrics
        checkpoint.save(
            self.ckpt_dir,
            self.model,
            epoch,
            done,
            self.results.to_dict(),
            metrics=metrics,
            trained=trained,
        )
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
    def iterations(self) -> int:
        return int(self.model.optimizer.iterations.numpy())

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


def near_target(records: list, target: float) -> bool:
    """Was the training-set loss after the last epoch within NEAR_TARGET × the target?"""
    last = records[-1].get("weights_loss") if records else None
    return last is not None and last <= NEAR_TARGET * target


def epoch_line(record: EpochRecord, config: RunConfig, seconds: float) -> None:
    """One log line per epoch: the epoch out of the run's, the running loss and accuracy, the
    validation accuracy, and the seconds its steps took."""
    values = {
        "loss": record.train_loss,
        "accuracy": record.train_accuracy,
        "val_accuracy": record.validation_accuracy,
    }
    parts = [f"{k} {v:.4f}" for k, v in values.items() if v is not None]
    logging.getLogger("lrbs_tf").info(
        "%s: epoch %d/%d: %s (%.1f s)",
        config.run_name,
        record.epoch,
        config.epochs,
        ", ".join(parts),
        seconds,
    )


def epoch_summaries(writers: dict, record: EpochRecord, marks) -> None:
    """``epoch_loss``/``epoch_accuracy`` per split (and the training set's loss and accuracy at
    the weights, ``epoch_loss_at_weights``), unless a replay after a kill already wrote them."""
    import tensorflow as tf

    if record.epoch <= marks.get("epoch"):
        return
    values = record.to_dict()
    for split in ("train", "validation", "test"):
        with writers[split].as_default(step=record.epoch), tf.summary.record_if(True):
            for metric in ("loss", "accuracy"):
                value = values.get(f"{split}_{metric}")
                if value is not None and math.isfinite(value):
                    tf.summary.scalar(f"epoch_{metric}", value)
                if split == "train" and values.get(f"weights_{metric}") is not None:
                    tf.summary.scalar(f"epoch_{metric}_at_weights", values[f"weights_{metric}"])
        writers[split].flush()
    marks.set("epoch", record.epoch)
