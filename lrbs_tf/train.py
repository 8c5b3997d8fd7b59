"""One training run: config → data → model → fit epoch by epoch → results and TensorBoard.

This is the only training loop of the toolkit. Each epoch is one ``model.fit`` call on a fresh
dataset of that epoch's batches (see :mod:`lrbs_tf.pipeline`), so epochs with different numbers
of steps keep exact progress-bar totals and an epoch can be rebuilt from ``(seed, epoch)``.
"""
from __future__ import annotations

import logging
import math
import os
import shutil
import time

import keras
import numpy as np
import tensorflow as tf

from lrbs_tf import callbacks as cb
from lrbs_tf import runio
from lrbs_tf.config import RunConfig
from lrbs_tf.data import load_dataset
from lrbs_tf.models import build_model
from lrbs_tf.optimizers import RatioScaledOptimizer, StepLog
from lrbs_tf.pipeline import EpochData, eval_dataset

log = logging.getLogger(__name__)


class RunExistsError(RuntimeError):
    """The run folder already holds a run."""


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
              callbacks=(), validation_data=None, verbose: int = 1, ratios=None):
    """Train one epoch (0-based ``epoch``) with the given batch sizes (and per-step η/S)."""
    return model.fit(train_data.dataset(sizes, epoch, ratios=ratios),
                     validation_data=validation_data,
                     initial_epoch=epoch, epochs=epoch + 1, callbacks=list(callbacks),
                     verbose=verbose, shuffle=False)


MAX_XLA_SHAPES = 8


def _use_jit(config: RunConfig, plans) -> bool:
    """XLA compiles once per distinct batch size (~0.5 s each here), then runs ~1.3x faster:
    worth it (``auto``) when the run has at most MAX_XLA_SHAPES distinct sizes."""
    if config.jit_compile != "auto":
        return config.jit_compile == "on"
    distinct = {size for sizes, _ in plans for size in sizes}
    return len(distinct) <= MAX_XLA_SHAPES


def _steps_per_execution(config: RunConfig, plans) -> int:
    """Given, or about 512 examples per call (at most 32 steps) for the smallest common batch.

    Several small steps per call amortise Keras' per-call overhead (measured 1.5x faster at
    S=25 with tools/bench_fit.py); large batches need no help.
    """
    if config.steps_per_execution is not None:
        return config.steps_per_execution
    smallest = min(min(sizes[:-1] or sizes) for sizes, _ in plans)
    return max(1, min(32, 512 // smallest))


def _prepare_run_dir(config: RunConfig) -> str:
    run_dir = config.run_dir
    if os.path.exists(os.path.join(run_dir, "config.json")) or os.path.exists(
            os.path.join(run_dir, "results.json")):
        if not config.overwrite:
            raise RunExistsError(f"{run_dir} already holds a run; pass --overwrite to replace it "
                                 "or --name to choose another folder")
        shutil.rmtree(run_dir)
    os.makedirs(run_dir, exist_ok=True)
    return run_dir


def _epoch_summaries(writers: dict, epoch: int, record: dict) -> None:
    for split, writer in writers.items():
        with writer.as_default(step=epoch + 1), tf.summary.record_if(True):
            for metric in ("loss", "accuracy"):
                value = record.get(f"{split}_{metric}")
                if value is not None and math.isfinite(value):
                    tf.summary.scalar(f"epoch_{metric}", value)
        writer.flush()


def train(config: RunConfig) -> dict:
    """Run ``config`` to the end and return the results (also written to ``results.json``)."""
    config.validate()
    start = time.time()
    keras.utils.set_random_seed(config.seed)
    data = load_dataset(config.dataset, data_dir=config.data_dir,
                        validation_size=config.validation_size, train_size=config.train_size,
                        seed=config.seed)
    plan = config.plan()
    plans = [plan.epoch(len(data.train), epoch) for epoch in range(config.epochs)]
    jit = _use_jit(config, plans)
    spe = _steps_per_execution(config, plans)
    run_dir = _prepare_run_dir(config)
    runio.write_json(os.path.join(run_dir, "config.json"), {
        "config": config.to_dict(),
        "jit_compile": jit,
        "steps_per_execution": spe,
        "deterministic": False,
        "data": data.info,
        "versions": runio.versions(),
    })
    results = {"status": "running", "run_dir": os.path.abspath(run_dir), "epochs": [],
               "diverged": False, "diverged_epoch": None}
    results_path = os.path.join(run_dir, "results.json")
    runio.write_json(results_path, results)

    model = build_model(config.model, data.train.x.shape[1:], data.num_classes, seed=config.seed,
                        width=config.width)
    compile_model(model, plans[0][1][0], config.momentum, jit, spe)

    train_data = EpochData(data.train.x, data.train.y, seed=config.seed)
    val_ds = eval_dataset(data.validation.x, data.validation.y, config.eval_batch_size)
    test_ds = eval_dataset(data.test.x, data.test.y, config.eval_batch_size)
    build_metrics(model, val_ds)
    tb = os.path.join(run_dir, "tb")
    writers = {split: tf.summary.create_file_writer(os.path.join(tb, split))
               for split in ("train", "validation", "test")}
    stop = cb.StopOnNonFinite()
    max_steps_per_epoch = max(len(sizes) for sizes, _ in plans)
    model.step_log = StepLog(max_steps_per_epoch)
    callbacks = [cb.EpochProgbar(config.epochs), cb.StepScalars(writers["train"], model.step_log),
                 stop]
    prober = probe_every = None
    if config.probe is not None:
        from lrbs_tf.curvature import Prober

        prober = Prober(model, data.train.x, data.train.y, config.probe)
        writers["probe"] = tf.summary.create_file_writer(os.path.join(tb, "probe"))
        if config.probe_every:
            probe_every = cb.ProbeEvery(prober, writers["probe"], config.probe_every,
                                        lr_at=lambda e: _lr_at(plan, e + 0.999))
            callbacks.append(probe_every)

    train_time = 0.0
    examples = 0
    for epoch in range(config.epochs):
        sizes, ratios = plans[epoch]
        tick = time.time()
        history = fit_epoch(model, train_data, sizes, epoch, callbacks, validation_data=val_ds,
                            ratios=ratios)
        train_time += time.time() - tick
        examples += sum(sizes)
        logs = {k: float(v[-1]) for k, v in history.history.items()}
        record = {"epoch": epoch + 1, "steps": len(sizes),
                  "train_loss": logs.get("loss"), "train_accuracy": logs.get("accuracy")}
        if stop.diverged_epoch is None and math.isfinite(record["train_loss"]):
            test = model.evaluate(test_ds, verbose=0, return_dict=True)
            record.update(validation_loss=logs.get("val_loss"),
                          validation_accuracy=logs.get("val_accuracy"),
                          test_loss=float(test["loss"]), test_accuracy=float(test["accuracy"]))
        record["wall_time"] = time.time() - start
        results["epochs"].append(record)
        _epoch_summaries(writers, epoch, record)
        if stop.diverged_epoch is not None or not math.isfinite(record["train_loss"]):
            results.update(diverged=True, diverged_epoch=epoch + 1)
            log.warning("loss became non-finite in epoch %d: stopping", epoch + 1)
            runio.write_json(results_path, results)
            break
        runio.write_json(results_path, results)

    finished = [r for r in results["epochs"] if r.get("validation_accuracy") is not None]
    summary = {}
    if finished:
        best = max(finished, key=lambda r: r["validation_accuracy"])
        final = finished[-1]
        summary = {
            "best_epoch": best["epoch"],
            "best_validation_accuracy": best["validation_accuracy"],
            "test_accuracy_at_best": best["test_accuracy"],
            "best_test_accuracy": max(r["test_accuracy"] for r in finished),
            "final_train_loss": final["train_loss"],
            "final_validation_accuracy": final["validation_accuracy"],
            "final_test_accuracy": final["test_accuracy"],
            "final_test_loss": final["test_loss"],
        }
    results.update(summary)
    if probe_every is not None:
        results["probe_history"] = probe_every.history
    if prober is not None and not results["diverged"]:
        log.info("probing curvature and gradient noise on %d examples", config.probe.examples)
        measured = prober(lr=_lr_at(plan, len(results["epochs"]) - 0.001))
        results["probe"] = dict(measured, settings=prober.describe())
        cb.write_probe_scalars(writers["probe"], measured, len(results["epochs"]))
    results.update(
        status="diverged" if results["diverged"] else "finished",
        wall_time=time.time() - start,
        train_time=train_time,
        examples_per_second=examples / train_time if train_time else None,
        weights_sha1=_weights_digest(model),
    )
    model.save(os.path.join(run_dir, "model.keras"))
    for writer in writers.values():
        writer.close()
    runio.write_json(results_path, results)
    return results


def _lr_at(plan, t: float) -> float:
    """η of a full-size step at progress ``t`` (epochs)."""
    return plan.ratio_at(t) * plan.batch_at(t)


def _weights_digest(model: keras.Model) -> str:
    import hashlib

    digest = hashlib.sha1()
    for w in model.weights:
        digest.update(np.asarray(w.numpy()).tobytes())
    return digest.hexdigest()
