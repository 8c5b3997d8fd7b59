"""One training run: config → data → model → fit epoch by epoch → results and TensorBoard.

This is the only training loop of the toolkit. Each epoch is one ``model.fit`` call on a fresh
dataset of that epoch's batches (see :mod:`lrbs_tf.pipeline`), so epochs with different numbers
of steps keep exact progress-bar totals and an epoch can be rebuilt from ``(seed, epoch)``.

Nothing is lost when a run stops: after every epoch (and every ``checkpoint_steps`` steps if
asked) the weights, optimizer state and position are checkpointed (:mod:`lrbs_tf.checkpoint`);
the same command resumes from there, on the same data order, schedule position, η/S wrapper
state and TensorBoard step numbers. With ``deterministic=True`` a resumed run ends with the same
weights, bit for bit, as one never interrupted (tested in ``tests/test_resume.py``).

Under a ``tf.distribute`` strategy (``config.strategy``, see :mod:`lrbs_tf.distribute`) the
model, optimizer and metrics live in the strategy's scope, S is the global batch, and with
several workers only the chief writes the run folder: the others run the same steps (their
collectives must match) writing into a scratch folder, and resume from the chief's checkpoint.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import os
import shutil
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf

from lrbs_tf import callbacks as cb
from lrbs_tf import checkpoint, distribute, runfolder, runio
from lrbs_tf.config import RunConfig
from lrbs_tf.data import load_dataset
from lrbs_tf.models import build_model
from lrbs_tf.optimizers import RatioScaledOptimizer, StepLog
from lrbs_tf.pipeline import EpochData, eval_dataset
from lrbs_tf.runfolder import RunExistsError  # noqa: F401 (part of this module's interface)

log = logging.getLogger(__name__)


class RunInterrupted(RuntimeError):
    """Training was interrupted (Ctrl-C); the state is saved and the run can be resumed."""


def compile_model(model: keras.Model, ratio: float, momentum: float = 0.0,
                  jit_compile: bool = False, steps_per_execution: int = 1) -> keras.Model:
    """Compile with plain SGD wrapped in :class:`RatioScaledOptimizer` and pre-build it.

    Pre-building the optimizer keeps ``train_step`` to a single trace (a variable created during
    the first trace would force a second one).
    """
    optimizer = RatioScaledOptimizer(keras.optimizers.SGD(learning_rate=0.0, momentum=momentum),
                                     ratio=ratio)
    model.compile(optimizer=optimizer,
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"], jit_compile=jit_compile,
                  steps_per_execution=steps_per_execution)
    optimizer.build(model.trainable_variables)
    return model


def build_metrics(model: keras.Model, eval_ds) -> None:
    """Create the compiled metrics' variables before training (one evaluation batch).

    Otherwise Keras creates them while tracing ``train_step``, which forces a second trace.
    """
    model.evaluate(eval_ds.take(1), verbose=0)


def fit_epoch(model: keras.Model, train_data: EpochData, sizes: list[int], epoch: int,
              callbacks=(), validation_data=None, verbose: int = 1, ratios=None,
              skip_batches: int = 0):
    """Train one epoch (0-based ``epoch``) with the given batch sizes (and per-step η/S),
    starting at batch ``skip_batches`` (a resumed epoch)."""
    return model.fit(train_data.dataset(sizes, epoch, skip_batches=skip_batches,
                                        ratios=ratios),
                     validation_data=validation_data,
                     initial_epoch=epoch, epochs=epoch + 1, callbacks=list(callbacks),
                     verbose=verbose, shuffle=False)


MAX_XLA_SHAPES = 8
# The loss target is checked after every epoch, and also CHECKS_NEAR_TARGET times within an
# epoch once the last check was within NEAR_TARGET × the target. Measured on the Fashion-MNIST
# MLP: near 0.05 the training-set loss falls 25-30 % per epoch at η/S = 1e-4 and 2e-3, so
# epoch-end checks alone stop runs anywhere in [0.035, 0.05]; one check costs about 0.3 s (a
# forward pass over 50000 examples), a quarter of an epoch at S = 1000.
NEAR_TARGET, CHECKS_NEAR_TARGET = 2.0, 4


def _use_jit(config: RunConfig, plans) -> bool:
    """XLA compiles once per distinct batch size (~0.5 s each for the MLP here), then runs
    ~1.3x faster: worth it (``auto``) for the MLP when the run has at most MAX_XLA_SHAPES
    distinct sizes. Not for the convolutional models on CPU: one epoch of VGG11 on 1000
    images took 108 s with XLA (compiling) against 17 s without."""
    if config.jit_compile != "auto":
        return config.jit_compile == "on"
    distinct = {size for sizes, _ in plans for size in sizes}
    return config.model == "mlp" and len(distinct) <= MAX_XLA_SHAPES


def _steps_per_execution(config: RunConfig, plans) -> int:
    """Given, or about 512 examples per call (at most 32 steps) for the smallest common batch.

    Several small steps per call amortise Keras' per-call overhead (measured 1.5x faster at
    S=25 with tools/bench_fit.py); large batches need no help.
    """
    if config.steps_per_execution is not None:
        return config.steps_per_execution
    smallest = min(min(sizes[:-1] or sizes) for sizes, _ in plans)
    return max(1, min(32, 512 // smallest))



def _epoch_summaries(writers: dict, epoch: int, record: dict, marks) -> None:
    if epoch + 1 <= marks.get("epoch"):
        return  # written before a kill; this is the replay
    for split in ("train", "validation", "test"):
        with writers[split].as_default(step=epoch + 1), tf.summary.record_if(True):
            for metric in ("loss", "accuracy"):
                value = record.get(f"{split}_{metric}")
                if value is not None and math.isfinite(value):
                    tf.summary.scalar(f"epoch_{metric}", value)
            if split == "train":  # the whole training set at the epoch's final weights
                for metric in ("loss", "accuracy"):
                    value = record.get(f"weights_{metric}")
                    if value is not None:
                        tf.summary.scalar(f"epoch_{metric}_at_weights", value)
        writers[split].flush()
    marks.set("epoch", epoch + 1)


def _summary(results: dict) -> dict:
    finished = [r for r in results["epochs"] if r.get("validation_accuracy") is not None]
    if not finished:
        return {}
    best = max(finished, key=lambda r: r["validation_accuracy"])
    final = finished[-1]
    return {
        "best_epoch": best["epoch"],
        "best_validation_accuracy": best["validation_accuracy"],
        "test_accuracy_at_best": best["test_accuracy"],
        "best_test_accuracy": max(r["test_accuracy"] for r in finished),
        "final_train_loss": final["train_loss"],
        "final_validation_accuracy": final["validation_accuracy"],
        "final_test_accuracy": final["test_accuracy"],
        "final_test_loss": final["test_loss"],
    }


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
        if chief:
            run_dir = load_dir = config.run_dir
        else:  # same steps (collectives must match) but writes go to a scratch folder
            load_dir, run_dir = config.run_dir, tempfile.mkdtemp(prefix="lrbs-worker-")
        run = _Run(config, data, run_dir, list(callbacks), model, strategy)
        try:
            results = run.go(resume=found.mode == "resume", load_dir=load_dir)
            return results if chief else dict(results, chief=False)
        finally:
            if not chief:
                shutil.rmtree(run_dir, ignore_errors=True)
    finally:
        if chief:
            runfolder.release(config.run_dir)


def _claim(config: RunConfig):
    """Lock and inspect (or create) the run folder; see :mod:`lrbs_tf.runfolder`."""
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
    path = os.path.join(run_dir, "model.keras")
    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as e:  # a truncated zip or h5 raises many types
        raise runfolder.RunDamagedError(
            f"{run_dir} is damaged: model.keras cannot be loaded ({type(e).__name__})"
            + runfolder.OVERWRITE_NOTE) from None
    if results.get("weights_sha1") not in (None, _weights_digest(model)):
        raise runfolder.RunDamagedError(
            f"{run_dir} is damaged: the weights in model.keras do not match the digest in "
            "results.json" + runfolder.OVERWRITE_NOTE)


class _Run:
    """One run between epochs: model, data, writers, results so far (see :func:`train`)."""

    def __init__(self, config: RunConfig, data, run_dir: str, extra_callbacks=(), model=None,
                 strategy=None):
        self.config, self.data, self.run_dir = config, data, run_dir
        self.given_model = model
        self.extra_callbacks = list(extra_callbacks)
        self.strategy = strategy
        self.chief = distribute.is_chief(strategy)
        replicas = distribute.replicas(strategy)
        self.plan = config.plan()
        self.plans = [self.plan.epoch(len(data.train), e, min_batch=replicas)
                      for e in range(config.epochs)]
        smallest = min(min(sizes) for sizes, _ in self.plans)
        if smallest < replicas:
            raise distribute.DistributeError(f"the batch-size schedule reaches {smallest}, fewer examples than "
                             f"the {replicas} replicas: every replica needs at least one")
        self.jit = _use_jit(config, self.plans) and not config.deterministic
        self.spe = _steps_per_execution(config, self.plans)
        if strategy is not None:  # both fail under a strategy in Keras 3 (keras#19246)
            if config.jit_compile == "on" or (config.steps_per_execution or 1) > 1:
                log.warning("XLA and steps_per_execution > 1 are off under %s",
                            type(strategy).__name__)
            self.jit, self.spe = False, 1
        self.results_path = os.path.join(run_dir, "results.json")
        self.ckpt_dir = os.path.join(run_dir, "ckpt")
        self.epoch = 0
        self.session_start = time.time()
        self._train_set_loss = None

    def write_config(self):
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

    def build(self):
        config, data = self.config, self.data
        options = {"width": config.width} if config.model == "mlp" else {}
        if self.strategy is not None:
            options["synchronized_bn"] = True  # batch statistics over the global batch
            if self.given_model is not None and (distribute.model_strategy(self.given_model)
                                                 is not self.strategy):
                raise distribute.DistributeError(
                    f"the model was not built in the scope of the run's "
                    f"{type(self.strategy).__name__}: build it inside "
                    "lrbs_tf.distribute.make_strategy(...).scope()")
        with distribute.scope(self.strategy):
            model = self.given_model or build_model(config.model, data.train.x.shape[1:],
                                                    data.num_classes, seed=config.seed,
                                                    **options)
            compile_model(model, self.plans[0][1][0], config.momentum, self.jit, self.spe)
            self.val_ds = eval_dataset(data.validation.x, data.validation.y,
                                       config.eval_batch_size)
            self.test_ds = eval_dataset(data.test.x, data.test.y, config.eval_batch_size)
            build_metrics(model, self.val_ds)
            model.step_log = StepLog(max(len(sizes) for sizes, _ in self.plans))
        self.model = model
        self.train_data = EpochData(data.train.x, data.train.y, seed=config.seed,
                                    augment=config.augment)

    def callbacks(self):
        config, tb = self.config, os.path.join(self.run_dir, "tb")
        self.writers = {split: tf.summary.create_file_writer(os.path.join(tb, split))
                        for split in ("train", "validation", "test")}
        self.marks = cb.WrittenMarks(os.path.join(tb, "written.json"))
        self.step_scalars = cb.StepScalars(self.writers["train"], self.model.step_log,
                                           self.marks)
        self.stop = cb.StopOnNonFinite()
        out = [cb.EpochProgbar(config.epochs), self.step_scalars, self.stop,
               *self.extra_callbacks]
        if distribute.is_multiworker(self.strategy):
            out.append(cb.Heartbeat())
        if config.checkpoint_steps:
            out.append(cb.CheckpointEvery(config.checkpoint_steps, self.save_position))
        self.prober = None
        if config.probe is not None:
            from lrbs_tf.curvature import Prober

            self.prober = Prober(self.model, self.data.train.x, self.data.train.y, config.probe)
            self.writers["probe"] = tf.summary.create_file_writer(os.path.join(tb, "probe"))
            if config.probe_every:
                every = cb.ProbeEvery(self.prober, self.writers["probe"], config.probe_every,
                                      lr_at=lambda e: _lr_at(self.plan, e + 0.999))
                every.history = self.results.setdefault("probe_history", [])
                out.append(every)
        return out

    def go(self, resume: bool, load_dir: str | None = None) -> dict:
        try:
            distribute.heartbeat("building the model")
            return self._go(resume, load_dir)
        finally:
            distribute.pause_watchdog()

    def _go(self, resume: bool, load_dir: str | None) -> dict:
        self.build()
        load_from = os.path.join(load_dir or self.run_dir, "ckpt")
        state = checkpoint.load(load_from, self.model) if resume else None
        if state is None:
            self.write_config()
            self.results = {"status": "running", "run_dir": os.path.abspath(self.run_dir),
                            "distribute": distribute.describe(self.strategy),
                            "epochs": [], "diverged": False, "diverged_epoch": None,
                            "train_time": 0.0, "resumed": 0}
            epoch, batch, metrics = 0, 0, None
        else:
            self.results = dict(state["results"], status="running",
                                distribute=distribute.describe(self.strategy))
            self.results["resumed"] = self.results.get("resumed", 0) + 1
            epoch, batch, metrics = state["epoch"], state["batch"], state["metrics"]
            log.info("resuming %s at epoch %d, batch %d", self.run_dir, epoch + 1, batch)
        if distribute.is_multiworker(self.strategy):
            distribute.check_workers_agree(
                self.strategy, [epoch, batch, sum(float(np.sum(w.numpy(), dtype=np.float64))
                                                  for w in self.model.weights)],
                "where the run starts (epoch, step and weights)")
        self.wall_before = self.results.get("wall_time", 0.0)
        self.checkpointed = len(self.results["epochs"])  # epochs the last checkpoint holds
        runio.write_json(self.results_path, self.results)
        callbacks = self.callbacks()
        try:
            self.loop(epoch, batch, metrics, callbacks)
            return self.finish()
        except KeyboardInterrupt:
            self.save_position()
            self.results["status"] = "interrupted"
            runio.write_json(self.results_path, self.results)
            raise RunInterrupted(f"interrupted: state saved in {self.run_dir}; run the same "
                                 "command to resume") from None
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
            for writer in self.writers.values():
                writer.close()

    def record_failure(self, error: BaseException) -> None:
        """Mark the run ``failed`` with the reason; the epochs recorded are those of the last
        checkpoint, so that the folder stays resumable. On a full disk the reserve is freed
        first, to make room for this last write."""
        if runio.disk_full(error):
            runio.free_reserve(self.run_dir)
        failed = dict(self.results, status="failed", epochs=self.results["epochs"][
            :self.checkpointed], error=f"{type(error).__name__}: {error}"[:2000])
        try:
            runio.write_json(self.results_path, failed)
        except OSError as e:
            log.error("could not record the failure in %s: %s", self.results_path, e)

    def near_target(self) -> bool:
        """Was the training-set loss after the last epoch within NEAR_TARGET × the target?"""
        epochs = self.results["epochs"]
        last = epochs[-1].get("weights_loss") if epochs else None
        return last is not None and last <= NEAR_TARGET * self.config.loss_target

    def train_set_loss(self) -> dict:
        """Loss and accuracy over the whole training set at the current weights, BatchNorm in
        inference mode (as the probes see the model); one compiled pass."""
        if self._train_set_loss is None:
            from lrbs_tf.evaluation import DatasetLoss

            self._train_set_loss = DatasetLoss(self.model, self.train_data.x, self.train_data.y)
        with distribute.scope(self.strategy):
            return self._train_set_loss()

    def wall_time(self) -> float:
        """Seconds spent on this run, over all sessions if it was resumed."""
        return self.wall_before + time.time() - self.session_start

    def save_position(self):
        """Checkpoint at the current step; TensorBoard rows recorded so far are written first."""
        self.step_scalars.flush()
        before = sum(len(sizes) for sizes, _ in self.plans[:self.epoch])
        done = int(self.model.optimizer.iterations.numpy()) - before
        checkpoint.save(self.ckpt_dir, self.model, self.epoch, done, self.results)
        self.checkpointed = len(self.results["epochs"])

    def logs_from_checkpoint(self, metrics) -> dict:
        """The epoch's logs when all its steps were done before the run stopped."""
        checkpoint.restore_metrics(self.model, metrics)
        logs = {k: float(v) for k, v in self.model.get_metrics_result().items()}
        val = self.model.evaluate(self.val_ds, verbose=0, return_dict=True)
        logs.update({f"val_{k}": float(v) for k, v in val.items()})
        self.step_scalars.flush()
        return logs

    def loop(self, start_epoch, start_batch, metrics, callbacks):
        config, results = self.config, self.results
        for epoch in range(start_epoch, config.epochs):
            self.epoch = epoch
            sizes, ratios = self.plans[epoch]
            skip = start_batch if epoch == start_epoch else 0
            extra = [cb.RestoreMetrics(metrics)] if skip and metrics else []
            target = config.loss_target
            check = None
            if target is not None and self.near_target():  # check within the epoch too
                check = cb.StopAtLoss(self.train_set_loss, target, start=skip,
                                      every=math.ceil(len(sizes) / CHECKS_NEAR_TARGET))
                extra.append(check)
            tick = time.time()
            before = int(self.model.optimizer.iterations.numpy()) - skip
            if skip >= len(sizes):  # stopped after the epoch's last step, before its record
                logs = self.logs_from_checkpoint(metrics)
            else:
                history = fit_epoch(self.model, self.train_data, sizes, epoch,
                                    callbacks + extra, validation_data=self.val_ds,
                                    ratios=ratios, skip_batches=skip)
                logs = {k: float(v[-1]) for k, v in history.history.items()}
            results["train_time"] += time.time() - tick
            steps = int(self.model.optimizer.iterations.numpy()) - before
            record = {"epoch": epoch + 1, "steps": steps,
                      "train_loss": logs.get("loss"), "train_accuracy": logs.get("accuracy")}
            if steps < len(sizes):  # stopped at the loss target within the epoch
                record["fraction"] = sum(sizes[:steps]) / sum(sizes)
            diverged = self.stop.diverged_epoch is not None or not math.isfinite(
                record["train_loss"])
            if not diverged:
                test = self.model.evaluate(self.test_ds, verbose=0, return_dict=True)
                record.update(validation_loss=logs.get("val_loss"),
                              validation_accuracy=logs.get("val_accuracy"),
                              test_loss=float(test["loss"]),
                              test_accuracy=float(test["accuracy"]))
            if target is not None and not diverged:  # the stop test reads the saved weights
                at_weights = (check.reached if check is not None and check.reached
                              else self.train_set_loss())
                record.update(weights_loss=at_weights["loss"],
                              weights_accuracy=at_weights["accuracy"])
            record["wall_time"] = self.wall_time()
            results["epochs"].append(record)
            results["wall_time"] = record["wall_time"]
            _epoch_summaries(self.writers, epoch, record, self.marks)
            if diverged:
                results.update(diverged=True, diverged_epoch=epoch + 1)
                log.warning("loss became non-finite in epoch %d: stopping", epoch + 1)
                break
            self.epoch = epoch + 1
            if target is not None and record["weights_loss"] <= target:
                results.update(loss_target_reached=True, loss_target_epoch=epoch + 1)
                log.info("training-set loss %.4g at the weights reached the target %g in "
                         "epoch %d", record["weights_loss"], target, epoch + 1)
                break
            checkpoint.save(self.ckpt_dir, self.model, epoch + 1, 0, results)
            self.checkpointed = len(results["epochs"])
            runio.write_json(self.results_path, results)

    def finish(self) -> dict:
        results, config = self.results, self.config
        results.update(_summary(results))
        if not results["diverged"] and results["epochs"]:
            last = results["epochs"][-1]
            at_weights = ({"loss": last["weights_loss"], "accuracy": last["weights_accuracy"]}
                          if "weights_loss" in last else self.train_set_loss())
            results.update(final_weights_loss=at_weights["loss"],
                           final_weights_accuracy=at_weights["accuracy"])
        if config.loss_target is not None:
            results.setdefault("loss_target_reached", False)
            results["loss_target"] = config.loss_target
            results["loss_reached"] = results.get("final_weights_loss")
        if self.prober is not None and not results["diverged"]:
            log.info("probing curvature and gradient noise on %d examples",
                     config.probe.examples)
            measured = self.prober(lr=_lr_at(self.plan, len(results["epochs"]) - 0.001))
            results["probe"] = dict(measured, settings=self.prober.describe())
            cb.write_probe_scalars(self.writers["probe"], measured, len(results["epochs"]))
        examples = sum(sum(self.plans[r["epoch"] - 1][0][:r["steps"]])
                       for r in results["epochs"])
        results["epochs_trained"] = examples / len(self.data.train)
        results.update(
            status="diverged" if results["diverged"] else "finished",
            examples_per_second=(examples / results["train_time"] if results["train_time"]
                                 else None),
            weights_sha1=_weights_digest(self.model),
            wall_time=self.wall_time(),
        )
        results.update(_save_model(self.model, os.path.join(self.run_dir, "model.keras")))
        runio.write_json(self.results_path, results)
        shutil.rmtree(self.ckpt_dir, ignore_errors=True)
        runio.free_reserve(self.run_dir)
        return results


def _save_model(model: keras.Model, path: str) -> dict:
    """``model.save`` to a temporary file beside ``path``, fsync, rename; returns the file's
    size and SHA-1 (recorded in results.json and checked whenever the run is reused)."""
    tmp = os.path.join(os.path.dirname(path), ".tmp-model.keras")
    try:
        model.save(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return {"model_bytes": os.path.getsize(path), "model_sha1": runfolder.sha1_of(path)}


def _lr_at(plan, t: float) -> float:
    """η of a full-size step at progress ``t`` (epochs)."""
    return plan.ratio_at(t) * plan.batch_at(t)


def _weights_digest(model: keras.Model) -> str:
    import hashlib

    digest = hashlib.sha1()
    for w in model.weights:
        digest.update(np.asarray(w.numpy()).tobytes())
    return digest.hexdigest()
