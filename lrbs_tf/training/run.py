"""One training run, read top to bottom: :func:`train` claims the run folder, sets up where it
runs and loads its data; a :class:`Run` builds the plan, the compiled model, TensorBoard, the
callbacks and the probes (``Run.__init__``, in that order) and goes through its stages
(:meth:`Run.go`): :meth:`~Run.start` (fresh, or from the last checkpoint), the epochs
(:meth:`~Run.train_epochs`: for each, :meth:`~Run.train_epoch` — one ``model.fit`` of that
epoch's batches —, :meth:`~Run.measure_epoch` — validation, test, the loss at the weights, the
streaming probe, the next batch size, measured but not yet recorded — and
:meth:`~Run.commit_epoch` — TensorBoard, the record, the checkpoint, one section a stop waits
for), :meth:`~Run.probe` and :meth:`~Run.finish`. The helpers it calls take and return values;
none reaches back into the run. Every attribute of a :class:`Run` is created in its
``__init__`` (``tests/test_layout.py`` checks it); ``results.json`` is written by
:meth:`Run.write` only (and, on a failure, by :meth:`Run.record_failure`).

Nothing is lost when a run stops. After every epoch (and every ``checkpoint_steps`` steps if
asked) the weights, optimizer state and position are checkpointed
(:mod:`lrbs_tf.training.checkpoint`); Ctrl-C or SIGTERM (:mod:`lrbs_tf.training.signals`)
saves a checkpoint that says how far the epoch got — in its steps, after them (Keras' running
metrics kept as the steps left them, before any evaluation resets them), or recorded — and the
same command resumes from there, on the same data order, schedule position, η/S wrapper state
and TensorBoard step numbers, to exactly the record an uninterrupted run writes. With
``deterministic=True`` the weights are bitwise the same too (``tests/test_stops.py``,
``tests/test_resume.py``, ``tools/chaos.py``).

Under a ``tf.distribute`` strategy (``config.strategy``, see :mod:`lrbs_tf.distribute`) the
model, optimizer and metrics live in the strategy's scope, S is the global batch, and with
several workers only the chief writes the run folder: the others run the same steps (their
collectives must match) writing into a scratch folder, and resume from the chief's checkpoint.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import time

import keras
import numpy as np
import tensorflow as tf

from lrbs_tf import distribute
from lrbs_tf.core.plan import EpochPlans, step_values
from lrbs_tf.data.datasets import load_for
from lrbs_tf.data.pipeline import EpochData, eval_dataset
from lrbs_tf.models.registry import check_user_model
from lrbs_tf.probes.callbacks import report_probe
from lrbs_tf.training import callbacks as cb
from lrbs_tf.training import checkpoint, fitting, signals
from lrbs_tf.training.config import RunConfig
from lrbs_tf.training.evaluation import DatasetLoss
from lrbs_tf.training.folder import (
    DiskFullError,
    RunExistsError,
    RunFolder,
    check_same_data,
    disk_full,
    versions,
    weights_digest,
)
from lrbs_tf.training.results import EpochRecord, RunResults, measured_model_problem
from lrbs_tf.training.signals import RunInterrupted  # noqa: F401 (raised by train)
from lrbs_tf.training.tensorboard import RunBoard

log = logging.getLogger(__name__)
PROGRESS = ("bar", "epoch", "none")
# The loss target is checked after every epoch, and also CHECKS_NEAR_TARGET times within an
# epoch once the last check was within NEAR_TARGET × the target. Measured on the Fashion-MNIST
# MLP: near 0.05 the training-set loss falls 25-30 % per epoch at η/S = 1e-4 and 2e-3, so
# epoch-end checks alone stop runs anywhere in [0.035, 0.05]; one check costs about 0.3 s (a
# forward pass over 50000 examples), a quarter of an epoch at S = 1000.
NEAR_TARGET, CHECKS_NEAR_TARGET = 2.0, 4


def train(
    config: RunConfig, callbacks=(), model: keras.Model | None = None, progress: str = "bar"
) -> dict:
    """Run ``config`` to the end and return the results (also written to ``results.json``).

    Repeating the same config resumes from the last checkpoint, or returns the results of a
    finished run. Ctrl-C or SIGTERM saves a checkpoint, marks the run ``interrupted`` and
    raises :class:`~lrbs_tf.training.signals.RunInterrupted` (a ``KeyboardInterrupt``); any
    other error marks it ``failed`` and propagates. Extra Keras ``callbacks`` join the run's own
    in every epoch's ``fit`` and its validation pass (they are not part of the recorded
    config). ``model`` replaces the registry's ``config.model`` (it is compiled here); the
    config should still name it, since resuming and probing a saved run rebuild from the
    config. ``progress``: ``bar`` (Keras' per-step progress bar and a line per epoch),
    ``epoch`` (a line per epoch on the ``lrbs_tf`` logger) or ``none``.
    """
    if progress not in PROGRESS:
        raise ValueError(f"progress must be one of {PROGRESS}, got {progress!r}")
    config.validate()
    if config.cpu_devices:  # before any TensorFlow operation (the model check builds one)
        distribute.split_cpu(config.cpu_devices)
    if model is None:
        check_user_model(config)  # a user's builder or model file: checked before any write
    chief = config.strategy != "multiworker" or distribute.chief_task()
    with signals.graceful():
        # 1. The run folder: claimed and locked by the chief, only looked at by other workers.
        with RunFolder.claim(config) if chief else RunFolder.look(config) as folder:
            found = folder.found
            if found.mode == "finished":
                log.info("%s is already finished", config.run_dir)
                folder.check_older_model(found.results)
                return found.results
            if config.resume and found.mode != "resume":
                raise RunExistsError(f"nothing to resume in {config.run_dir}")
            # 2. Where it runs, and its data.
            strategy = start_strategy(config)
            data = load_for(config)
            if found.mode == "resume":
                check_same_data(found, data, config.run_dir)
            # 3. The run: the other workers write into a scratch folder.
            with contextlib.nullcontext(folder) if chief else RunFolder.scratch() as writes:
                run = Run(config, data, writes, strategy, model, callbacks, progress)
                results = run.go(resume=found.mode == "resume", load_dir=config.run_dir)
            return results if chief else dict(results, chief=False)


def start_strategy(config: RunConfig):
    """The run's ``tf.distribute`` strategy (None for one device), its op determinism and
    seed, set before anything is built."""
    if config.cpu_devices:
        distribute.split_cpu(config.cpu_devices)
    strategy = distribute.make_strategy(config.strategy, config.devices, config.peer_timeout)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(config.seed)
    return strategy


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
    """One run's state, all of it created here, in the order a run needs it; the stages are
    its methods."""

    def __init__(
        self,
        config: RunConfig,
        data,
        folder: RunFolder,
        strategy=None,
        model=None,
        extra_callbacks=(),
        progress: str = "bar",
    ):
        self.config, self.data, self.folder, self.strategy = config, data, folder, strategy
        # The plan: every step's S and η/S.
        self.plan = config.plan()
        self.plans = EpochPlans(
            self.plan, len(data.train), config.epochs, min_batch=distribute.replicas(strategy)
        )
        distribute.check_batches(self.plans.smallest(), strategy)
        # Keras: XLA and steps per call, the evaluation sets, the compiled model, the data.
        self.jit, self.spe = fitting.keras_choices(config, self.plans, strategy)
        self.val_ds = eval_dataset(data.validation.x, data.validation.y, config.eval_batch_size)
        self.test_ds = eval_dataset(data.test.x, data.test.y, config.eval_batch_size)
        self.model = fitting.compiled_model(
            config, self.plans, self.jit, self.spe, strategy, model, self.val_ds
        )
        self.train_data = EpochData(
            data.train.x, data.train.y, seed=config.seed, augment=config.augment
        )
        self.weights_loss = DatasetLoss(self.model, self.train_data.x, self.train_data.y)
        # TensorBoard, the callbacks, the probes.
        self.board = RunBoard(folder.path, self.model.step_log, probes=config.probe is not None)
        self.callbacks, self.validation_callbacks, self.test_callbacks = run_callbacks(
            config, self.board, extra_callbacks, progress, strategy, self.save_position
        )
        self.prober = make_prober(config, self.model, data, strategy)
        self.growth = make_growth(config, self.plans, self.model, data)
        # What it records.
        self.results = RunResults(
            run_dir=os.path.abspath(folder.path),
            model=model_record(config, self.model),
            distribute=distribute.describe(strategy),
            data_source=data.info.get("source"),
            synthetic_data=bool(data.info.get("synthetic")) or None,
        )
        self.verbose = 1 if progress == "bar" else 0  # for Keras' fit
        self.epoch_lines = progress != "none"
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
                signals.raise_if_received()
                with signals.deferred():
                    return self.finish()
            except KeyboardInterrupt as stop:
                raise self.interrupted(stop) from None
            except BaseException as e:
                if isinstance(e, Exception) and signals.received() is not None:
                    # a stop that TensorFlow or Keras turned into another error on its way
                    raise self.interrupted(signals.Stop(signals.received())) from None
                self.record_failure(e)
                if disk_full(e):
                    raise DiskFullError(
                        28,
                        f"the disk of {self.folder.path} is full "
                        f"({getattr(e, 'strerror', None) or type(e).__name__}); the run is "
                        "marked failed and the same command resumes it from its last "
                        "checkpoint once there is space",
                    ) from None
                raise
            finally:
                self.board.close()
        finally:
            distribute.pause_watchdog()

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
            where = (position.epoch + 1, position.batch)
            log.info("resuming %s at epoch %d, batch %d", self.folder.path, *where)
        if self.growth is not None:  # the batch sizes decided before a resume
            decisions = [r["growth"] for r in self.results.epochs if r.get("growth")]
            for decision in decisions:
                self.plans.decide(decision["epoch"], decision["next_batch_size"])
            self.growth.restore(decisions)
        with_step_values(self.results.epochs, self.plans)  # records of an older lrbs_tf
        if distribute.is_multiworker(self.strategy):
            weights = sum(float(np.sum(w.numpy(), dtype=np.float64)) for w in self.model.weights)
            distribute.check_workers_agree(
                self.strategy,
                [position.epoch, position.batch, weights],
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
            signals.raise_if_received()  # a stop that TensorFlow swallowed on its way
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
        target, check = self.config.loss_target, None
        if target is not None and near_target(self.results.epochs, target):
            every = math.ceil(len(sizes) / CHECKS_NEAR_TARGET)
            check = cb.StopAtLoss(self.train_set_loss, target, start=skip, every=every)
            extra.append(check)
        tick = time.time()
        before = self.iterations() - skip
        history = fitting.fit_epoch(
            self.model,
            self.train_data,
            sizes,
            epoch,
            self.callbacks + extra,
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
        (sizes, ratios), logs, config = self.plans[epoch], trained.logs, self.config
        ran = max(1, trained.steps)  # S, η and η/S of the steps that ran
        record = EpochRecord(
            epoch + 1,
            trained.steps,
            train_loss=logs.get("loss"),
            train_accuracy=logs.get("accuracy"),
            **step_values(sizes[:ran], ratios[:ran]),
        )
        if trained.steps < len(sizes):  # stopped at the loss target within the epoch
            record.fraction = sum(sizes[: trained.steps]) / sum(sizes)
        if not math.isfinite(record.train_loss):
            return record, None
        quiet = dict(verbose=0, return_dict=True)
        val = self.model.evaluate(self.val_ds, callbacks=self.validation_callbacks, **quiet)
        test = self.model.evaluate(self.test_ds, callbacks=self.test_callbacks, **quiet)
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
            probed = streaming_probe(self.prober, self.lr_at(epoch + 0.999), epoch + 1)
        if self.growth is not None and epoch + 1 < config.epochs and not reached:
            record.growth = self.growth.decide(epoch)  # the next S, at the same η/S
        return record, probed

    def commit_epoch(self, record: EpochRecord, probed: dict | None, seconds: float) -> None:
        """Record the epoch (TensorBoard, results, the next batch size) and checkpoint it; a
        stop waits until this is done (:class:`~lrbs_tf.training.signals.deferred`)."""
        results, target = self.results, self.config.loss_target
        record.wall_time = self.wall_time()
        self.board.epoch(record)
        if probed is not None:
            results.probe_history = [*(results.probe_history or []), probed]
            self.board.probe(probed, record.epoch)
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
        if self.config.keep_epochs and record.epoch % self.config.keep_epochs == 0:
            self.folder.save_snapshot(self.model, record.epoch)  # before the checkpoint
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
        if self.prober is None or self.results.diverged:
            return
        settings = self.config.probe
        done = len(self.results.epochs)
        budget = settings.rel_error is not None or settings.max_seconds is not None
        last = (self.results.probe_history or [{}])[-1]
        if last.get("epoch") == done and not budget:  # the streaming probe measured these weights
            log.info("the final probe is the one after epoch %d", done)
            measured = {k: v for k, v in last.items() if k != "epoch"}
            self.results.probe = dict(measured, settings=self.prober.describe(), after_epoch=done)
            return
        lr = self.lr_at(done - 0.001)
        planned = None
        if settings.time_share and not budget:
            settings, planned = time_shared(
                settings, self.results.train_time, self.examples_trained(), len(self.data.train)
            )
            budget = True
        else:
            log.info("probing curvature and gradient noise on %d examples", settings.examples)
        if budget:
            measured = budgeted_probe(self, settings, lr, planned)
        else:
            measured = dict(self.prober(lr=lr), settings=self.prober.describe())
        self.results.probe = measured
        with signals.deferred():  # one TensorBoard point per epoch
            self.board.probe(measured, done)

    def examples_trained(self) -> int:
        """Examples stepped on so far (each epoch's plan up to the steps it took)."""
        return sum(sum(self.plans[r["epoch"] - 1].sizes[: r["steps"]]) for r in self.results.epochs)

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
            results.measured_model = measured_model_problem(
                results, self.data.num_classes, batchnorm_of(self.model, self.iterations())
            )
        if config.loss_target is not None:
            results.loss_target = config.loss_target
            results.loss_target_reached = bool(results.loss_target_reached)
            results.loss_reached = results.final_weights_loss
        examples = self.examples_trained()
        results.epochs_trained = examples / len(self.data.train)
        results.examples_per_second = examples / results.train_time if results.train_time else None
        results.status = "diverged" if results.diverged else "finished"
        results.weights_sha1 = weights_digest(self.model)
        results.wall_time = self.wall_time()
        saved = self.folder.save_model(self.model)
        results.model_bytes, results.model_sha1 = saved["model_bytes"], saved["model_sha1"]
        self.write()
        self.folder.remove_checkpoints()
        self.folder.free_reserve()
        return results.to_dict()

    def interrupted(self, stop: BaseException) -> RunInterrupted:
        """Save the state after a stop (a second stop does not cut the save short); the
        exception to raise."""
        signum = signals.signum_of(stop)
        if self.results.status in ("finished", "diverged"):  # stopped during its last writes
            return RunInterrupted(
                f"interrupted after the run ended ({self.results.status}): nothing lost, its "
                f"results are in {self.folder.path}",
                signum,
            )
        with signals.deferred(swallow=True):
            self.save_position()
            self.results.status = "interrupted"
            self.write()
        return RunInterrupted(
            f"interrupted: state saved in {self.folder.path}; run the same command to resume",
            signum,
        )

    # -- files -------------------------------------------------------------------------------
    def write(self) -> None:
        """Write results.json (the only place that does)."""
        self.folder.write_json("results.json", self.results.to_dict())

    def write_config(self) -> None:
        deterministic = self.config.deterministic
        self.folder.write_json(
            "config.json",
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
                "model": self.results.model,
                "distribute": distribute.describe(self.strategy),
                "versions": versions(),
            },
        )

    def save_position(self) -> None:
        """Checkpoint where the run is now: in the current epoch's steps, after them, or (its
        record written) at the start of the next epoch. TensorBoard rows go first."""
        self.board.step_scalars.flush()
        epoch, metrics, trained = self.epoch, None, False
        if len(self.results.epochs) > epoch:  # the epoch is recorded: the next one is due
            epoch, done = epoch + 1, 0
        else:
            done = self.iterations() - self.plans.steps_before(epoch)
            trained = self.trained_metrics is not None
            metrics = self.trained_metrics
        checkpoint.save(
            self.folder.file("ckpt"),
            self.model,
            epoch,
            done,
            self.results.to_dict(),
            metrics=metrics,
            trained=trained,
        )
        self.checkpointed = len(self.results.epochs)

    def checkpoint_epoch_end(self) -> None:
        checkpoint.save(self.folder.file("ckpt"), self.model, self.epoch, 0, self.results.to_dict())
        self.checkpointed = len(self.results.epochs)
        self.write()

    def record_failure(self, error: BaseException) -> None:
        """Mark the run ``failed`` with the reason; the epochs recorded are those of the last
        checkpoint, so that the folder stays resumable. On a full disk the reserve is freed
        first, to make room for this last write."""
        if disk_full(error):
            self.folder.free_reserve()
        failed = dict(
            self.results.to_dict(),
            status="failed",
            epochs=self.results.epochs[: self.checkpointed],
            error=f"{type(error).__name__}: {error}"[:2000],
        )
        try:
            self.folder.write_json("results.json", failed)
        except OSError as e:
            log.error("could not record the failure in %s: %s", self.folder.path, e)

    # -- measurements ------------------------------------------------------------------------
    def iterations(self) -> int:
        return int(self.model.optimizer.iterations.numpy())

    def train_set_loss(self) -> dict:
        """Loss and accuracy over the whole training set at the current weights, BatchNorm in
        inference mode (as the probes see the model); one compiled pass."""
        with distribute.scope(self.strategy):
            return self.weights_loss()

    def lr_at(self, t: float) -> float:
        """η of a full-size step at progress ``t`` (epochs)."""
        return self.plan.ratio_at(t) * self.plan.batch_at(t)

    def wall_time(self) -> float:
        """Seconds spent on this run, over all sessions if it was resumed."""
        return self.wall_before + time.time() - self.session_start


# -- the parts of a run, built from explicit values --------------------------------------------


def run_callbacks(config, board, extra, progress: str, strategy, save_position):
    """``(fit, validation, test)`` callbacks: every epoch's ``fit`` gets the progress bar, the
    step writer, the user's and (with ``checkpoint_steps``) the mid-epoch checkpoint; the
    validation pass gets the user's, as in Keras' own ``fit``; under several workers all get
    the watchdog's heartbeat."""
    heartbeat = [cb.Heartbeat()] if distribute.is_multiworker(strategy) else []
    bar = [cb.EpochProgbar(config.epochs)] if progress == "bar" else []
    fit = [*bar, board.step_scalars, *extra, *heartbeat]
    if config.checkpoint_steps:
        fit.append(cb.CheckpointEvery(config.checkpoint_steps, save_position))
    return fit, [*heartbeat, *extra], heartbeat


def model_record(config, model) -> dict:
    """The model a run built: its parameters (trainable and all) and the options the run
    passed to its builder (none: the builder's own defaults)."""
    from lrbs_tf.models import sources as model_sources

    trainable = sum(int(np.prod(v.shape)) for v in model.trainable_weights)
    return {
        "parameters": int(model.count_params()),
        "trainable_parameters": trainable,
        "options": model_sources.options(config),
        "batchnorm": batchnorm_of(model, 0) is not None,
    }


def batchnorm_of(model, steps: int) -> dict | None:
    """The momentum of the model's BatchNorm layers (the largest) and the steps taken; None
    without BatchNorm."""
    momenta = [
        float(layer.momentum)
        for layer in model._flatten_layers()
        if isinstance(layer, keras.layers.BatchNormalization)
    ]
    return {"momentum": max(momenta), "steps": steps} if momenta else None


def time_shared(settings, train_time: float, examples: int, num_train: int):
    """``(settings, examples of the first pass)``: ``settings`` with a time limit of
    ``time_share`` × the training time (at least :data:`~lrbs_tf.probes.settings.MIN_SECONDS`),
    its examples the most to use, and a first pass planned from the training's speed
    (:func:`lrbs_tf.probes.budget.first_examples`)."""
    from lrbs_tf.probes.budget import first_examples
    from lrbs_tf.probes.settings import MIN_SECONDS

    limit = max(settings.time_share * train_time, MIN_SECONDS)
    first = first_examples(limit, train_time / max(examples, 1), min(settings.examples, num_train))
    log.info(
        "probing curvature and gradient noise for at most %.0f s (%g × the %.0f s of training), "
        "first on %s (tools/probe.py on the run folder with --examples N measures it on N)",
        limit,
        settings.time_share,
        train_time,
        f"{first} examples" if first else "a light pilot",
    )
    return dataclasses.replace(settings, max_seconds=limit), first


def budgeted_probe(run, settings, lr: float, planned: int | None = None) -> dict:
    """The final probe within ``--probe-rel-error`` / ``--probe-max-seconds``
    (:mod:`lrbs_tf.probes.budget`): more examples until every figure is there, or the time
    is up."""
    from lrbs_tf.probes import budget

    built = {}

    def make(chosen):
        config = dataclasses.replace(run.config, probe=chosen)
        built["last"] = make_prober(config, run.model, run.data, run.strategy)
        return built["last"]

    first = None if settings.max_seconds is not None else run.prober
    found = budget.measure(make, settings, len(run.data.train), lr, first=first, planned=planned)
    return dict(found, settings=(built.get("last") or run.prober).describe())


def make_prober(config, model, data, strategy):
    """The curvature and noise probes of ``config.probe`` on the training examples (None
    without probes)."""
    if config.probe is None:
        return None
    from lrbs_tf.probes.prober import Prober

    return Prober(
        model,
        data.train.x,
        data.train.y,
        config.probe,
        on_call=distribute.heartbeat if distribute.is_multiworker(strategy) else None,
        step_batch=config.batch_size,
    )


def make_growth(config, plans, model, data):
    """The adaptive batch size of ``--bs-schedule adaptive`` (None otherwise)."""
    if plans.plan.adaptive is None:
        return None
    from lrbs_tf.probes.growth import BatchGrowth

    growth = BatchGrowth(
        (data.train.x, data.train.y),
        ratio=config.ratio,
        start=config.batch_size,
        num_train=len(data.train),
        max_batch=plans.plan.adaptive.maximum,
        seed=config.seed,
    )
    growth.set_model(model)
    return growth


def streaming_probe(prober, lr: float, epoch: int) -> dict:
    """The probe after ``epoch`` (1-based) of ``--probe-every``, reported on the logger."""
    log.info(
        "probing sharpness after epoch %d on %d examples (S = %s)",
        epoch,
        prober.settings.examples,
        prober.step_batch or "none",
    )
    probed = dict(prober(lr=lr), epoch=epoch)
    report_probe(probed, epoch)
    return probed


def near_target(records: list, target: float) -> bool:
    """Was the training-set loss after the last epoch within NEAR_TARGET × the target?"""
    last = records[-1].get("weights_loss") if records else None
    return last is not None and last <= NEAR_TARGET * target


def epoch_line(record: EpochRecord, config: RunConfig, seconds: float) -> None:
    """One log line per epoch: the epoch out of the run's, its S, η and η/S, the running loss
    and accuracy, the validation accuracy, and the seconds its steps took."""
    values = {
        "loss": record.train_loss,
        "accuracy": record.train_accuracy,
        "val_accuracy": record.validation_accuracy,
    }
    parts = [f"{k} {v:.4f}" for k, v in values.items() if v is not None]
    logging.getLogger("lrbs_tf").info(
        "%s: epoch %d/%d: %s; %s (%.1f s)",
        config.run_name,
        record.epoch,
        config.epochs,
        ran_at(record.to_dict()),
        ", ".join(parts),
        seconds,
    )


def ran_at(record: dict) -> str:
    """``S 640, η 0.005, η/S 7.812e-06`` (ranges as ``S 128-640``) of an epoch record."""
    within = record.get("within_epoch") or {}
    parts = []
    for key, label, form in (
        ("batch_size", "S", "{:d}"),
        ("lr", "η", "{:.4g}"),
        ("ratio", "η/S", "{:.4g}"),
    ):
        low, high = within.get(key, (record[key], record[key]))
        text = form.format(low) if low == high else f"{form.format(low)}-{form.format(high)}"
        parts.append(f"{label} {text}")
    return ", ".join(parts)


def with_step_values(records: list[dict], plans: EpochPlans) -> None:
    """Fill in S, η and η/S of epoch records written before lrbs_tf recorded them (a run
    resumed from an older checkpoint), from the run's plan."""
    for record in records:
        if "ratio" not in record:
            sizes, ratios = plans[record["epoch"] - 1]
            ran = max(1, record["steps"])
            record.update(step_values(sizes[:ran], ratios[:ran]))
