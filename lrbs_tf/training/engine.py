"""The Keras mechanics of a run: compiling with the ratio-scaled optimizer, one ``fit`` per
epoch, the per-epoch plans, the XLA and steps-per-execution choices, saving the model."""

from __future__ import annotations

import functools
import hashlib
import logging
from typing import NamedTuple

import keras
import numpy as np

from lrbs_tf import compat, files
from lrbs_tf.core.optimizers import RatioScaledOptimizer
from lrbs_tf.data.pipeline import EpochData
from lrbs_tf.models import specs as model_specs

MAX_XLA_SHAPES = 8
log = logging.getLogger(__name__)


def compile_model(
    model: keras.Model,
    ratio: float,
    momentum: float = 0.0,
    jit_compile: bool = False,
    steps_per_execution: int = 1,
) -> keras.Model:
    """Compile with plain SGD wrapped in :class:`RatioScaledOptimizer` and pre-build it.

    Pre-building the optimizer keeps ``train_step`` to a single trace (a variable created during
    the first trace would force a second one).
    """
    optimizer = RatioScaledOptimizer(
        keras.optimizers.SGD(learning_rate=0.0, momentum=momentum), ratio=ratio
    )
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=jit_compile,
        steps_per_execution=steps_per_execution,
    )
    optimizer.build(model.trainable_variables)
    return model


def build_metrics(model: keras.Model, eval_ds) -> None:
    """Create the compiled metrics' variables before training (one evaluation batch).

    Otherwise Keras creates them while tracing ``train_step``, which forces a second trace.
    """
    model.evaluate(eval_ds.take(1), verbose=0)


def fit_epoch(
    model: keras.Model,
    train_data: EpochData,
    sizes: list[int],
    epoch: int,
    callbacks=(),
    verbose: int = 1,
    ratios=None,
    skip_batches: int = 0,
):
    """Train one epoch (0-based ``epoch``) with the given batch sizes (and per-step η/S),
    starting at batch ``skip_batches`` (a resumed epoch). Only the steps: the run evaluates
    after ``fit`` returns, so that Keras' running training metrics are still there to be
    checkpointed if the run stops while it evaluates."""
    return model.fit(
        train_data.dataset(sizes, epoch, skip_batches=skip_batches, ratios=ratios),
        initial_epoch=epoch,
        epochs=epoch + 1,
        callbacks=list(callbacks),
        verbose=verbose,
        shuffle=False,
    )


class EpochPlan(NamedTuple):
    """One epoch: the size of each batch and, with an η/S schedule, each step's η/S."""

    sizes: list
    ratios: list | None


class EpochPlans:
    """The batch sizes and η/S of every epoch of a run, computed when first needed.

    ``plans[e]`` is the :class:`EpochPlan` of epoch ``e``; with constant schedules every epoch
    is the same and is computed once, so a long run starts at once. A batch size decided
    during training (``--bs-schedule adaptive``) goes in through :meth:`decide`, which keeps
    the computed epochs consistent with it.
    """

    def __init__(self, plan, num_examples: int, epochs: int, min_batch: int = 1):
        self.plan, self.num_examples, self.epochs = plan, num_examples, epochs
        self.min_batch = min_batch
        self.constant = plan.is_constant()
        self._epoch = functools.lru_cache(maxsize=64)(self._compute)

    def decide(self, epoch: int, batch_size: int) -> None:
        """From 0-based ``epoch`` on, the adaptive schedule's batch size is ``batch_size``."""
        self.plan.adaptive.decided[epoch] = batch_size
        self._epoch.cache_clear()

    def _compute(self, epoch: int) -> EpochPlan:
        return EpochPlan(*self.plan.epoch(self.num_examples, epoch, min_batch=self.min_batch))

    def __getitem__(self, epoch: int) -> EpochPlan:
        return self._epoch(0 if self.constant else epoch)

    def __len__(self) -> int:
        return self.epochs

    def each(self) -> list[EpochPlan]:
        """Every epoch's plan (one, when they are all the same)."""
        return [self[0]] if self.constant else [self[e] for e in range(self.epochs)]

    def first_ratio(self) -> float:
        """η/S of the run's first step."""
        return self[0].ratios[0]

    def steps_before(self, epoch: int) -> int:
        if self.constant:
            return epoch * len(self[0].sizes)
        return sum(len(self[e].sizes) for e in range(epoch))

    def smallest(self) -> int:
        return min(min(p.sizes) for p in self.each())

    def most_steps(self) -> int:
        return max(len(p.sizes) for p in self.each())


def choose_jit(config, plans: EpochPlans) -> bool:
    """XLA compiles once per distinct batch size (~0.5 s each for the MLP here), then runs
    ~1.3x faster: worth it (``auto``) for registry models marked ``xla`` (the MLP) when the run
    has at most MAX_XLA_SHAPES distinct sizes. Not for the convolutional models on CPU: one
    epoch of VGG11 on 1000 images took 108 s with XLA (compiling) against 17 s without."""
    if config.jit_compile == "off":
        return False
    if plans.plan.adaptive is not None:  # sizes decided during training: unknown in advance
        if config.jit_compile == "on":
            log.warning(
                "--jit on with --bs-schedule adaptive: XLA compiles the train step once "
                "per batch size the run chooses (about 0.5 s each for the MLP)"
            )
        return config.jit_compile == "on"
    distinct = {size for p in plans.each() for size in p.sizes}
    if config.jit_compile == "on":
        if len(distinct) > MAX_XLA_SHAPES:
            log.warning(
                "--jit on: this run has %d distinct batch sizes and XLA compiles the train "
                "step once for each (about 0.5 s each for the MLP; a triangle schedule "
                "ran 31x slower); --jit auto would leave XLA off",
                len(distinct),
            )
        return True
    return model_specs.spec(config.model).xla and len(distinct) <= MAX_XLA_SHAPES


def choose_steps_per_execution(config, plans: EpochPlans) -> int:
    """Given, or about 512 examples per call (at most 32 steps) for the smallest common batch.

    Several small steps per call amortise Keras' per-call overhead (measured 1.5x faster at
    S=25 with tools/bench_fit.py); large batches need no help.
    """
    if config.steps_per_execution is not None:
        return config.steps_per_execution
    smallest = min(min(p.sizes[:-1] or p.sizes) for p in plans.each())
    return max(1, min(32, 512 // smallest))


def weights_digest(model: keras.Model) -> str:
    digest = hashlib.sha1()
    for w in model.weights:
        digest.update(np.asarray(w.numpy()).tobytes())
    return digest.hexdigest()


def save_model(model: keras.Model, path: str) -> dict:
    """Save the model to ``path``: serialised in memory (:func:`lrbs_tf.compat.save_model_bytes`),
    then written atomically and never through a link (:mod:`lrbs_tf.files`); returns
    the file's size and SHA-1 (recorded in results.json and checked whenever the run is
    reused)."""
    data = compat.save_model_bytes(model)
    files.write_bytes(path, data)
    return {"model_bytes": len(data), "model_sha1": hashlib.sha1(data).hexdigest()}
