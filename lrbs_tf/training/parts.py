"""The parts a run is assembled from, built in one call before it starts: the model (compiled,
its metrics and step log built), the evaluation datasets, the training data, the TensorBoard
writers and the Keras callbacks, and the probes."""

from __future__ import annotations

import dataclasses
import os

import keras
import tensorflow as tf

from lrbs_tf import distribute
from lrbs_tf.core.optimizers import StepLog
from lrbs_tf.data.pipeline import EpochData, eval_dataset
from lrbs_tf.models.registry import build_for
from lrbs_tf.training import callbacks as cb
from lrbs_tf.training import engine
from lrbs_tf.training.evaluation import DatasetLoss

SPLITS = ("train", "validation", "test")


@dataclasses.dataclass
class Parts:
    model: keras.Model
    val_ds: tf.data.Dataset
    test_ds: tf.data.Dataset
    train_data: EpochData
    train_set_loss: DatasetLoss  # the loss over the training set at the weights
    writers: dict  # split -> tf.summary writer (and "probe" with probes)
    marks: cb.WrittenMarks  # what the TensorBoard files already hold (a resumed run)
    step_scalars: cb.StepScalars
    callbacks: list  # for every epoch's fit
    eval_callbacks: list  # for the validation pass (Keras' fit gives it its callbacks)
    heartbeat: list  # for the test pass: the multi-worker watchdog's, if any
    prober: object | None  # lrbs_tf.probes.prober.Prober (at the end, and every K epochs)
    growth: object | None  # lrbs_tf.probes.growth.BatchGrowth (--bs-schedule adaptive)


def assemble(
    config,
    data,
    run_dir: str,
    plans,
    jit: bool,
    spe: int,
    strategy,
    model=None,
    extra_callbacks=(),
    save_position=None,
    progress: str = "bar",
) -> Parts:
    """Everything a :class:`~lrbs_tf.training.run.Run` needs, for ``config`` on ``data``."""
    if (
        strategy is not None
        and model is not None
        and (distribute.model_strategy(model) is not strategy)
    ):
        raise distribute.DistributeError(
            f"the model was not built in the scope of the run's {type(strategy).__name__}: "
            "build it inside lrbs_tf.distribute.make_strategy(...).scope()"
        )
    with distribute.scope(strategy):
        model = model or build_for(config, strategy)
        engine.compile_model(model, plans.first_ratio(), config.momentum, jit, spe)
        val_ds = eval_dataset(data.validation.x, data.validation.y, config.eval_batch_size)
        test_ds = eval_dataset(data.test.x, data.test.y, config.eval_batch_size)
        engine.build_metrics(model, val_ds)
        model.step_log = StepLog(plans.most_steps())
    train_data = EpochData(data.train.x, data.train.y, seed=config.seed, augment=config.augment)
    tb = os.path.join(run_dir, "tb")
    writers = {split: tf.summary.create_file_writer(os.path.join(tb, split)) for split in SPLITS}
    marks = cb.WrittenMarks(os.path.join(tb, "written.json"))
    step_scalars = cb.StepScalars(writers["train"], model.step_log, marks)
    progress_bar = [cb.EpochProgbar(config.epochs)] if progress == "bar" else []
    callbacks = [*progress_bar, step_scalars, *extra_callbacks]
    multiworker = distribute.is_multiworker(strategy)
    heartbeat = [cb.Heartbeat()] if multiworker else []
    callbacks += heartbeat
    # as in Keras' own fit, the callbacks of fit see the validation pass (on_test_*)
    eval_callbacks = [*heartbeat, *extra_callbacks]
    if config.checkpoint_steps:
        callbacks.append(cb.CheckpointEvery(config.checkpoint_steps, save_position))
    prober = None
    if config.probe is not None:
        from lrbs_tf.probes.callbacks import write_layout
        from lrbs_tf.probes.prober import Prober

        prober = Prober(
            model,
            data.train.x,
            data.train.y,
            config.probe,
            on_call=distribute.heartbeat if multiworker else None,
            step_batch=config.batch_size,
        )
        writers["probe"] = tf.summary.create_file_writer(os.path.join(tb, "probe"))
        write_layout(writers["probe"])
    growth = None
    if plans.plan.adaptive is not None:
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
    return Parts(
        model=model,
        val_ds=val_ds,
        test_ds=test_ds,
        train_data=train_data,
        train_set_loss=DatasetLoss(model, train_data.x, train_data.y),
        writers=writers,
        marks=marks,
        step_scalars=step_scalars,
        callbacks=callbacks,
        eval_callbacks=eval_callbacks,
        heartbeat=heartbeat,
        prober=prober,
        growth=growth,
    )
