"""The Keras side of a run: compiling with the ratio-scaled optimizer, one ``fit`` per epoch,
and the XLA and steps-per-execution choices."""

from __future__ import annotations

import logging

import keras

from lrbs_tf.core.optimizers import RatioScaledOptimizer
from lrbs_tf.data.pipeline import EpochData
from lrbs_tf.models import sources as model_sources
from lrbs_tf.progress import keras_bars_to_stderr

MAX_XLA_SHAPES = 8
log = logging.getLogger(__name__)


def compile_model(
    model: keras.Model,
    ratio: float,
    momentum: float = 0.0,
    jit_compile: bool = False,
    steps_per_execution: int = 1,
    inner=None,
    loss=None,
    metrics=("accuracy",),
) -> keras.Model:
    """Compile with plain SGD (or the optimizer ``inner``) wrapped in
    :class:`RatioScaledOptimizer` and pre-build it; the loss is the softmax cross-entropy on
    logits unless ``loss`` is given.

    Pre-building the optimizer keeps ``train_step`` to a single trace (a variable created during
    the first trace would force a second one).
    """
    inner = inner or keras.optimizers.SGD(learning_rate=0.0, momentum=momentum)
    optimizer = RatioScaledOptimizer(inner, ratio=ratio)
    model.compile(
        optimizer=optimizer,
        loss=loss or keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=list(metrics),
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
    checkpointed if the run stops while it evaluates. Keras' progress bar (``verbose=1``) goes
    to stderr (:func:`~lrbs_tf.progress.keras_bars_to_stderr`)."""
    with keras_bars_to_stderr():
        return model.fit(
            train_data.dataset(sizes, epoch, skip_batches=skip_batches, ratios=ratios),
            initial_epoch=epoch,
            epochs=epoch + 1,
            callbacks=list(callbacks),
            verbose=verbose,
            shuffle=False,
        )


def choose_jit(config, plans) -> bool:
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
    return model_sources.describe(config.model).xla and len(distinct) <= MAX_XLA_SHAPES


def choose_steps_per_execution(config, plans) -> int:
    """Given, or about 512 examples per call (at most 32 steps) for the smallest common batch.

    Several small steps per call amortise Keras' per-call overhead (measured 1.5x faster at
    S=25 with tools/bench_fit.py); large batches need no help.
    """
    if config.steps_per_execution is not None:
        return config.steps_per_execution
    smallest = min(min(p.sizes[:-1] or p.sizes) for p in plans.each())
    return max(1, min(32, 512 // smallest))


def keras_choices(config, plans, strategy) -> tuple[bool, int]:
    """``(jit, steps_per_execution)`` of a run: XLA (:func:`choose_jit`, never with op
    determinism) and the steps per call (:func:`choose_steps_per_execution`); both off under a
    strategy, where they fail in Keras 3 (keras#19246)."""
    jit = choose_jit(config, plans) and not config.deterministic
    spe = choose_steps_per_execution(config, plans)
    if strategy is not None:
        if config.jit_compile == "on" or (config.steps_per_execution or 1) > 1:
            log.warning("XLA and steps_per_execution > 1 are off under %s", type(strategy).__name__)
        jit, spe = False, 1
    return jit, spe


def compiled_model(config, plans, jit: bool, spe: int, strategy, model, eval_ds) -> keras.Model:
    """The run's model — ``model`` if given (built in the strategy's scope), else the
    registry's for ``config`` — compiled with the ratio-scaled optimizer at the first step's
    η/S, its metrics built on ``eval_ds`` and a :class:`~lrbs_tf.core.steplog.StepLog` of the
    longest epoch attached, all in the strategy's scope."""
    from lrbs_tf import distribute
    from lrbs_tf.core.steplog import StepLog
    from lrbs_tf.models.registry import build_for

    if strategy is not None and model is not None:
        if distribute.model_strategy(model) is not strategy:
            raise distribute.DistributeError(
                f"the model was not built in the scope of the run's {type(strategy).__name__}: "
                "build it inside lrbs_tf.distribute.make_strategy(...).scope()"
            )
    with distribute.scope(strategy):
        model = model or build_for(config, strategy)
        compile_model(model, plans.first_ratio(), config.momentum, jit, spe)
        build_metrics(model, eval_ds)
        model.step_log = StepLog(plans.most_steps())
    return model
