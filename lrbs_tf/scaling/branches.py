"""Training the branches of a scaling test from θ0, and measuring them.

:class:`Trainer` holds the model (one Keras model for every branch: its train step is traced
once per optimizer configuration, not once per branch) and, for each branch
(:class:`~lrbs_tf.scaling.plan.BranchSpec`):

1. puts every variable of the model back to θ0 — weights, BatchNorm moving statistics and the
   dropout seed state — and starts the optimizer afresh (momentum and Adam's moments at zero,
   its step count at 0) with the branch's η/S in the ratio-scaled optimizer: **the same
   start, and the same optimizer state (none), in every branch**;
2. trains on the branch's batches of the stream (:mod:`lrbs_tf.scaling.stream`) up to each
   measurement point, one ``fit`` per stretch, every step's loss, S, η and η/S going to the
   branch's TensorBoard folder (:class:`~lrbs_tf.training.tensorboard.StepScalars`);
3. at each point measures the training-set loss at the weights on a fixed subset, BatchNorm in
   inference mode, **after recomputing BatchNorm's moving statistics from a fixed subset of
   training examples**, in one batch
   (:func:`lrbs_tf.probes.landscape.recompute_bn_statistics`): a branch at k× the batch takes
   k× fewer steps, so its running averages would lag differently; recomputed, the loss depends
   on the weights alone. (The moving statistics do not enter training, which
   uses each batch's own.)

A branch whose loss becomes non-finite stops at that point (``diverged``).
"""

from __future__ import annotations

import math
import time

import keras
import numpy as np
import tensorflow as tf

from lrbs_tf.core.steplog import StepLog
from lrbs_tf.data.pipeline import EpochData
from lrbs_tf.probes.hessian import sparse_softmax_cross_entropy
from lrbs_tf.probes.landscape import recompute_bn_statistics
from lrbs_tf.scaling import stream
from lrbs_tf.scaling.svag import SvagModel
from lrbs_tf.training.evaluation import DatasetLoss
from lrbs_tf.training.fitting import compile_model
from lrbs_tf.training.tensorboard import StepScalars

LOSS_TAG = "scale/loss_at_weights"


def inner_optimizer(optimizer: dict) -> keras.optimizers.Optimizer:
    """The Keras optimizer of a branch's hyperparameters (its η is set by the ratio wrapper)."""
    name = optimizer["name"]
    if name == "sgd":
        return keras.optimizers.SGD(0.0, momentum=optimizer["momentum"])
    if name == "adam":
        return keras.optimizers.Adam(
            0.0, optimizer["beta_1"], optimizer["beta_2"], optimizer["epsilon"]
        )
    return keras.optimizers.RMSprop(0.0, rho=optimizer["beta_1"], epsilon=optimizer["epsilon"])


def subset(num: int, size: int, seed: int) -> np.ndarray:
    """A fixed, seeded, sorted choice of ``size`` of ``num`` indices (all when fewer)."""
    if size >= num:
        return np.arange(num)
    return np.sort(np.random.default_rng(seed).choice(num, size=size, replace=False))


class Trainer:
    """The branches of ``plan`` from the model's current state θ0 on the training arrays
    ``(x, y)``; ``loss`` is a per-example loss ``fn(y, outputs)`` (default: softmax
    cross-entropy on logits)."""

    def __init__(self, model, x, y, plan, eval_examples, bn_examples, seed=0, loss=None, jit=False):
        self.model, self.plan, self.x, self.y = model, plan, x, y
        self.theta0 = [(v, v.numpy()) for v in model.variables]  # these objects, these values
        self.keras_loss = loss  # None: compile_model's cross-entropy
        self.per_example = loss or sparse_softmax_cross_entropy
        self.eval_indices = subset(len(y), eval_examples, seed + 101)
        self.bn_indices = subset(len(y), bn_examples, seed + 202)
        ix = self.eval_indices
        self.evaluator = DatasetLoss(model, x[ix], y[ix], loss=loss)
        self.spe = max(1, min(32, 512 // plan.batch0))  # as lrbs_tf.training.fitting does
        self.jit = bool(jit)  # XLA: compiles once per batch size
        longest = max(b.steps for b in plan.branches) if plan.branches else 1
        self.step_log = StepLog(longest)
        model.step_log = self.step_log
        self.compiled = None  # the optimizer configuration the model is compiled with
        self.svag = None
        self.streams: dict = {}

    def measure(self) -> dict:
        """The loss (and accuracy) at the current weights: BatchNorm statistics recomputed on
        the fixed subset, then inference mode on the evaluation subset."""
        recompute_bn_statistics(self.model, self.x[self.bn_indices], len(self.bn_indices))
        return self.evaluator()

    def start(self) -> dict:
        """The measurement at θ0 (the model is put back to θ0 afterwards)."""
        self.restore()
        out = self.measure()
        self.restore()
        return out

    def restore(self) -> None:
        for variable, value in self.theta0:
            variable.assign(value)

    def describe(self) -> dict:
        return {
            "eval_examples": len(self.eval_indices),
            "bn_examples": len(self.bn_indices),
            "steps_per_execution": self.spe,
            "jit_compile": self.jit,
            "bn_statistics": "recomputed before each measurement: the statistics of the fixed "
            "BatchNorm subset, in one batch (training mode)",
            "optimizer_state": "fresh in every branch (no momentum or moments carried from θ0)",
        }

    def run(self, spec, tb_dir: str) -> dict:
        """Train branch ``spec`` from θ0 and measure it at every point; its record."""
        self.restore()
        runner = self._svag(spec) if spec.kind == "svag" else self._compiled(spec)
        cut = stream.pairs if spec.kind == "svag" else stream.batches
        data = self._stream(spec.order)
        writer = tf.summary.create_file_writer(tb_dir)
        done, seconds, rows, tick = 0, 0.0, [], time.time()
        try:
            for point, target in zip(self.plan.points, self.plan.steps_at(spec.batch, spec.ell)):
                stretch = cut(data, spec.batch, self.plan.block, done, target - done)
                start = time.time()
                runner.fit(stretch, verbose=0, shuffle=False)
                seconds, done = seconds + time.time() - start, target
                measured = self.measure()
                rows.append(dict(examples=point, steps=done, train_seconds=seconds, **measured))
                with writer.as_default(step=point), tf.summary.record_if(True):
                    tf.summary.scalar(LOSS_TAG, measured["loss"])
                if not math.isfinite(measured["loss"]):
                    break
            StepScalars(writer, self.step_log).flush()  # once per branch: one trace
        finally:
            writer.close()
        return {
            "name": spec.name,
            "points": rows,
            "diverged": not math.isfinite(rows[-1]["loss"]),
            "steps": done,
            "train_seconds": seconds,
            "wall_seconds": time.time() - tick,
        }

    def _compiled(self, spec):
        key = tuple(sorted(spec.optimizer.items()))
        model = self.model
        if key != self.compiled:
            compile_model(
                model,
                spec.ratio,
                jit_compile=self.jit,
                steps_per_execution=self.spe,
                inner=inner_optimizer(spec.optimizer),
                loss=self.keras_loss,
                metrics=(),
            )
            self.compiled = key
        for variable in model.optimizer.variables:
            variable.assign(tf.zeros(variable.shape, variable.dtype))
        model.optimizer.ratio.assign(spec.ratio)
        return model

    def _svag(self, spec):
        if self.svag is None:
            self.svag = SvagModel(self.model, self.per_example, self.step_log)
            self.svag.compile_svag(self.spe, self.jit)
        for variable in self.svag.optimizer.variables:
            variable.assign(tf.zeros(variable.shape, variable.dtype))
        self.svag.set_step(spec.ell, spec.lr, spec.batch)
        return self.svag

    def _stream(self, order: int) -> EpochData:
        if order not in self.streams:
            self.streams[order] = EpochData(self.x, self.y, seed=order)
        return self.streams[order]
