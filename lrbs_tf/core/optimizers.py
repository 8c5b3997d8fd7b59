"""The ratio-scaled optimizer: applied learning rate η = (η/S) × S_global at every step.

:class:`RatioScaledOptimizer` wraps any Keras optimizer (like Keras' own ``LossScaleOptimizer``)
and holds two variables, the ratio η/S and the global batch size of the current step. Before each
update it assigns ``ratio * batch_size`` to the inner optimizer's learning rate, so the step is
exact for every batch, including a ragged last batch, a scheduled batch size, or a batch split
unevenly over replicas (the batch size is all-reduced, see :func:`global_batch_size`).

A step is applied in one call that carries its batch size, :meth:`RatioScaledOptimizer.apply_step`
(there is no "set the batch size first" rule): the model's ``train_step`` makes it —
:class:`RatioModel` (or the :class:`RatioTrainStep` mixin for subclassed models) does that,
reduces the loss exactly over replicas, and records ``lr``, ``batch_size`` and ``ratio`` of every
step in a :class:`StepLog`. Keras' own ``apply``/``apply_gradients`` know no batch size: they raise
a clear error, which a model that does not feed the optimizer meets when its train step is
traced.

Keras' learning-rate tools work through the ratio: ``LearningRateScheduler`` and
``ReduceLROnPlateau`` set η at the nominal batch size and so set η/S (see
:class:`RatioScaledOptimizer`), a ``LearningRateSchedule`` of the inner optimizer gives η/S =
schedule / S, :class:`RatioScheduler` schedules η/S itself, and :class:`RatioLogs` (added by
``RatioTrainStep.fit``) puts η, η/S and S in ``history``.
"""

from __future__ import annotations

import inspect
import logging

import keras
import numpy as np
import tensorflow as tf

from lrbs_tf import compat
from lrbs_tf.core.steplog import RATIO_KEY, StepLog, split_step_ratio

log = logging.getLogger(__name__)

__all__ = [
    "RatioScaledOptimizer",
    "BatchSizeUnknown",
    "RatioLogs",
    "RatioScheduler",
    "RatioModel",
    "RatioTrainStep",
    "StepLog",
    "global_batch_size",
    "as_ratio_model",
    "split_step_ratio",
    "RATIO_KEY",
]


def global_batch_size(x) -> tf.Tensor:
    """Number of examples in this step summed over replicas (float32).

    Inside ``train_step`` under a ``tf.distribute`` strategy ``tf.shape(x)[0]`` is the
    per-replica batch; ``local × num_replicas`` is wrong when a batch splits unevenly (129 →
    65 + 64), so the count is all-reduced.
    """
    first = tf.nest.flatten(x)[0]
    size = tf.cast(tf.shape(first)[0], tf.float32)
    ctx = tf.distribute.get_replica_context()
    if ctx is not None and ctx.num_replicas_in_sync > 1:
        size = ctx.all_reduce(tf.distribute.ReduceOp.SUM, size)
    return size


class BatchSizeUnknown(ValueError):
    """η = (η/S) × S has no value yet: no step has given the optimizer a batch size S."""


NO_BATCH_YET = (
    "a RatioScaledOptimizer applies η = (η/S) × S, and it has seen no batch yet, so there is "
    "no S for this η: set η/S instead (RatioScaledOptimizer(ratio=…), optimizer.ratio.assign, "
    "or lrbs_tf.callbacks.RatioScheduler in place of LearningRateScheduler), or call fit with "
    "arrays and a batch_size (or a dataset batched with drop_remainder=True) so that S is known"
)


@keras.saving.register_keras_serializable(package="lrbs_tf")
class RatioScaledOptimizer(keras.optimizers.Optimizer):
    """Wrap ``inner_optimizer`` so that its learning rate is ``ratio × global batch size``.

    Args:
        inner_optimizer: a Keras optimizer (default: plain SGD, momentum 0, as in Jastrzębski
            et al. 2018). A float learning rate of it is ignored (the wrapper sets it every
            step); a ``LearningRateSchedule`` of it gives η at the nominal batch size, so that
            η/S = schedule(step) / S follows the schedule (the inner optimizer is then copied
            with a float learning rate, the schedule kept here and saved with it).
        ratio: η/S, the learning rate per example of the batch (default 1e-4; not with a
            schedule).

    **The η Keras sees.** Between steps ``optimizer.learning_rate`` is η at the *nominal* batch
    size S — the larger of the last two steps' S, so a ragged last batch is never it — and
    setting it (Keras' ``LearningRateScheduler``, ``ReduceLROnPlateau``) sets η/S = η / S:
    the ratio follows, and every step still applies η = (η/S) × its own S. Before the first
    step the nominal S is ``fit``'s ``batch_size`` (arrays) or a dataset's static batch size
    (:meth:`expect_batch_size`); without either, reading or setting η raises
    :class:`BatchSizeUnknown`. Keras' TensorBoard callback logs the same η.
    """

    def __init__(self, inner_optimizer=None, ratio=None, name=None, **kwargs):
        if kwargs:
            raise ValueError(
                f"RatioScaledOptimizer does not take {sorted(kwargs)}; "
                "set them on the inner optimizer"
            )
        if inner_optimizer is None:
            inner_optimizer = keras.optimizers.SGD(learning_rate=0.0)
        if not isinstance(inner_optimizer, keras.optimizers.Optimizer):
            raise TypeError(f"inner_optimizer must be a Keras optimizer, got {inner_optimizer!r}")
        schedule = compat.raw_learning_rate(inner_optimizer)
        if isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule):
            if ratio is not None:
                raise ValueError(
                    "give either ratio= or an inner optimizer with a LearningRateSchedule "
                    "(its η is η at the nominal batch size, η/S = η / S), not both"
                )
            inner_optimizer = _without_schedule(inner_optimizer)
        else:
            schedule = None
        super().__init__(learning_rate=0.0, name=name)
        self.inner_optimizer = inner_optimizer
        self.lr_schedule = schedule
        self.initial_ratio = 1e-4 if ratio is None else float(ratio)
        self._expected = None  # (S, iterations): fit's batch size, until its first step

    def build(self, var_list):
        if self.built:
            return
        self.ratio = self.add_variable(
            shape=(),
            dtype="float32",
            initializer=keras.initializers.Constant(self.initial_ratio),
            aggregation="only_first_replica",
            name="ratio",
        )
        self.batch_size = self.add_variable(
            shape=(),
            dtype="float32",
            initializer="zeros",
            aggregation="only_first_replica",
            name="batch_size",
        )
        self.inner_optimizer.build(var_list)
        super().build(var_list)

    @property
    def variables(self):
        return compat.own_variables(self) + self.inner_optimizer.variables

    def apply_step(self, grads, trainable_variables, batch_size, ratio=None):
        """Apply one step whose global batch is ``batch_size`` examples (and whose η/S is
        ``ratio``, when a schedule gives it): η = (η/S) × S for exactly this step. Afterwards
        the inner learning rate holds η at the nominal S (see the class docstring)."""
        if not self.built:
            with keras.name_scope(self.name, caller=self):
                self.build(trainable_variables)
            self.built = True
        size = tf.cast(batch_size, tf.float32)
        nominal = tf.maximum(size, self.batch_size)  # a ragged batch is never the larger
        if ratio is not None:
            if self.lr_schedule is not None:
                raise ValueError("a per-step ratio and a LearningRateSchedule cannot both set η/S")
            self.ratio.assign(tf.cast(ratio, tf.float32))
        elif self.lr_schedule is not None:
            eta = tf.cast(self.lr_schedule(self.iterations), tf.float32)
            self.ratio.assign(eta / nominal)
        self.batch_size.assign(size)
        learning_rate = self.inner_optimizer.learning_rate
        learning_rate.assign(self.ratio * size)
        applied = self.inner_optimizer.apply(grads, trainable_variables)
        learning_rate.assign(self.ratio * nominal)  # what callbacks read between steps
        return applied

    def apply(self, grads, trainable_variables=None):
        raise ValueError(
            "RatioScaledOptimizer needs the global batch size of every step: train with "
            "lrbs_tf.optimizers.RatioModel (as_ratio_model(model)) or the RatioTrainStep "
            "mixin, or call optimizer.apply_step(grads, variables, batch_size)"
        )

    # -- the η and S Keras' callbacks see ---------------------------------------------------
    def expect_batch_size(self, batch_size) -> None:
        """The nominal S until the next step (``fit``'s batch size: RatioTrainStep calls
        this); None forgets it."""
        self._expected = None if batch_size is None else (float(batch_size), self._steps())

    def _steps(self) -> int:
        return int(self.iterations.numpy())

    def nominal_batch_size(self) -> float:
        """The S that η refers to: ``fit``'s batch size before its first step, else the larger
        of the last two steps' S; raises :class:`BatchSizeUnknown` before any."""
        if self._expected is not None and self._expected[1] == self._steps():
            return self._expected[0]
        if self.built and float(self.batch_size.numpy()) > 0:
            ratio = float(self.ratio.numpy())
            if ratio > 0:
                return float(round(float(self.inner_optimizer.learning_rate.numpy()) / ratio))
            return float(self.batch_size.numpy())
        raise BatchSizeUnknown(NO_BATCH_YET)

    def current_ratio(self) -> float:
        """η/S now (the ratio of the next step, unless a schedule or the data set it)."""
        return float(self.ratio.numpy()) if self.built else self.initial_ratio

    def set_ratio(self, ratio: float) -> None:
        """Set η/S for the next steps (no batch size needed)."""
        if self.built:
            stepped = float(self.batch_size.numpy()) > 0
            nominal = self.nominal_batch_size() if stepped else None  # before the ratio changes
            self.ratio.assign(float(ratio))
            if stepped and not self._fresh_fit():  # η at the nominal S follows
                self.inner_optimizer.learning_rate.assign(float(ratio) * nominal)
        else:
            self.initial_ratio = float(ratio)

    @property
    def learning_rate(self):
        if not tf.executing_eagerly():
            return self.inner_optimizer.learning_rate
        if self.built and float(self.batch_size.numpy()) > 0 and not self._fresh_fit():
            return self.inner_optimizer.learning_rate
        return self.current_ratio() * self.nominal_batch_size()

    def _fresh_fit(self) -> bool:
        return self._expected is not None and self._expected[1] == self._steps()

    @learning_rate.setter
    def learning_rate(self, value):
        if self.lr_schedule is not None:
            raise TypeError(
                "this RatioScaledOptimizer's η follows the LearningRateSchedule of its inner "
                "optimizer, hence its learning rate is not settable"
            )
        if isinstance(value, keras.optimizers.schedules.LearningRateSchedule) or callable(value):
            raise TypeError(
                "give a LearningRateSchedule to the inner optimizer when you create it: "
                "RatioScaledOptimizer(keras.optimizers.SGD(schedule))"
            )
        ratio = float(value) / self.nominal_batch_size()
        if self.built:
            self.ratio.assign(ratio)
            if not self._fresh_fit():
                self.inner_optimizer.learning_rate.assign(float(value))
        else:
            self.initial_ratio = ratio

    @property
    def iterations(self):
        return self.inner_optimizer.iterations

    def scale_loss(self, loss):
        return self.inner_optimizer.scale_loss(loss)

    def finalize_variable_values(self, var_list):
        self.inner_optimizer.finalize_variable_values(var_list)

    def get_config(self):
        inner = keras.saving.serialize_keras_object(self.inner_optimizer)
        if self.lr_schedule is not None:
            inner["config"]["learning_rate"] = keras.optimizers.schedules.serialize(
                self.lr_schedule
            )
        return {
            "name": self.name,
            "ratio": None if self.lr_schedule is not None else self.initial_ratio,
            "inner_optimizer": inner,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        inner = keras.saving.deserialize_keras_object(
            config.pop("inner_optimizer"), custom_objects=custom_objects
        )
        return cls(inner, **config)


def _without_schedule(optimizer):
    """A fresh copy of ``optimizer`` with a float learning rate in place of its schedule."""
    if optimizer.built:
        raise ValueError(
            "give RatioScaledOptimizer an inner optimizer with a LearningRateSchedule before it "
            "is built (it is copied with a float learning rate)"
        )
    config = dict(optimizer.get_config(), learning_rate=0.0)
    return optimizer.__class__.from_config(config)


class RatioTrainStep:
    """Mixin for ``keras.Model`` subclasses: the ratio-aware, replica-exact train step.

    Every step it feeds the global batch size (summed over replicas) and, if the dataset carries
    it (:func:`split_step_ratio`), the step's η/S to the :class:`RatioScaledOptimizer`; sample
    weights are then not supported. The loss differentiated is Σ(per-example loss) / global
    batch on every replica count (Keras' own step averages per-replica means, which is not the
    same when a batch splits unevenly, 65 + 64). The returned logs are the compiled metrics, so
    Keras' epoch logs are read from the metric variables across all replicas. With a
    :class:`StepLog` attached (``model.step_log = StepLog(n)``) every step's loss (over the
    global batch), S, η and η/S are recorded.

    A subclassed model inherits it first (``class MyRatioNet(RatioTrainStep, MyNet)``) and
    needs no build before ``fit``. ``fit`` tells the optimizer its ``batch_size`` (the S of
    Keras' learning-rate callbacks before the first step) and adds η, η/S and S at the nominal
    batch size to every epoch's logs (``history.history["learning_rate"]``, ``["ratio"]``,
    ``["batch_size"]``; :class:`RatioLogs`).
    """

    step_log = None

    def fit(self, *args, **kwargs):
        optimizer = getattr(self, "optimizer", None)
        if not isinstance(optimizer, RatioScaledOptimizer):
            return super().fit(*args, **kwargs)
        given = _FIT_SIGNATURE.bind(self, *args, **kwargs).arguments
        given.pop("self")
        optimizer.expect_batch_size(_fit_batch_size(given.get("x"), given.get("batch_size")))
        callbacks = given.get("callbacks")
        if callbacks is None or isinstance(callbacks, list | tuple):
            given["callbacks"] = [RatioLogs(), *(callbacks or [])]
        return super().fit(**given)

    def train_step(self, data):
        data, step_ratio = split_step_ratio(data)
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        ctx = tf.distribute.get_replica_context()
        replicas = ctx.num_replicas_in_sync if ctx is not None else 1
        local = tf.shape(tf.nest.flatten(x)[0])[0]
        batch = global_batch_size(x)
        if step_ratio is not None and step_ratio.shape.rank:
            # One copy per example; every replica holds at least one (see plan.epoch_batch_sizes)
            step_ratio = tf.reduce_max(step_ratio)
        optimizer = self.optimizer
        scaled = isinstance(optimizer, RatioScaledOptimizer)
        if not scaled and step_ratio is not None:
            raise ValueError("a per-step ratio needs a RatioScaledOptimizer")

        with tf.GradientTape() as tape:
            y_pred = self(x, training=True) if compat.takes_training_arg(self) else self(x)
            loss = compat.compute_loss(self, x, y, y_pred, sample_weight)
            local_loss = compat.unscale_loss(loss)  # mean over this replica's batch
            compat.loss_tracker(self).update_state(local_loss, sample_weight=local)
            if replicas > 1:  # this replica's share of Σ(per-example loss) / global batch
                loss = local_loss * tf.cast(tf.cast(local, tf.float32) / batch, loss.dtype)
            loss = optimizer.scale_loss(loss)
        weights = self.trainable_weights
        if scaled and not optimizer.built:  # after the forward pass, which builds a subclassed
            optimizer.build(weights)  # model; a second trace follows: pre-build to avoid it
        grads = tape.gradient(loss, weights)
        if scaled:
            optimizer.apply_step(grads, weights, batch, step_ratio)
        else:
            optimizer.apply_gradients(zip(grads, weights))
        logs = self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)
        if self.step_log is not None:
            self._record_step(local_loss, local, batch, ctx, replicas)
        return logs

    def _record_step(self, local_loss, local, batch, ctx, replicas) -> None:
        """One row of the step log: the loss over the global batch, S, the η applied, η/S."""
        optimizer = self.optimizer
        batch_loss = tf.cast(local_loss, tf.float32)
        if replicas > 1:
            batch_loss = (
                ctx.all_reduce(tf.distribute.ReduceOp.SUM, batch_loss * tf.cast(local, tf.float32))
                / batch
            )
        if isinstance(optimizer, RatioScaledOptimizer):
            ratio = tf.convert_to_tensor(optimizer.ratio)
            lr = ratio * batch
        else:
            lr = tf.cast(tf.convert_to_tensor(optimizer.learning_rate), tf.float32)
            ratio = lr / batch
        self.step_log.record(optimizer.iterations, (batch_loss, batch, lr, ratio))

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        """Keras builds the model from the first batch before ``fit``/``evaluate`` under a
        strategy, averaging that batch over the replicas, which fails when it splits unevenly
        (keras-team/keras#19246) or across workers (keras-team/keras#20585). The first
        replica's part has the same shapes and dtypes: build from it instead."""
        strategy = compat.model_strategy(self)
        if strategy is None:
            return compat.keras_symbolic_build(self, iterator=iterator, data_batch=data_batch)
        if iterator is not None:
            for _, _, it in iterator:
                data_batch = next(it)
                break

        def first_replica(value):
            if isinstance(value, tf.distribute.DistributedValues):
                return strategy.experimental_local_results(value)[0]
            return value

        if data_batch is not None:
            data_batch = split_step_ratio(tf.nest.map_structure(first_replica, data_batch))[0]
        with strategy.scope():
            compat.symbolic_build(self, data_batch)


_FIT_SIGNATURE = inspect.signature(keras.Model.fit)


def _fit_batch_size(x, batch_size) -> float | None:
    """The S of ``fit``'s full batches when it is known before the first step: ``batch_size``
    (Keras' default 32) for arrays, a dataset's static batch size, else None (a generator's
    or a ``PyDataset``'s batches are its own)."""
    if isinstance(x, tf.data.Dataset):
        shape = tf.nest.flatten(x.element_spec)[0].shape
        return float(shape[0]) if shape.rank and shape[0] is not None else None
    if hasattr(x, "shape") or isinstance(x, dict | list | tuple):
        return float(batch_size or 32)
    return None


class RatioLogs(keras.callbacks.Callback):
    """Adds ``learning_rate`` (η at the nominal batch size), ``ratio`` (η/S) and
    ``batch_size`` (the nominal S) to every epoch's logs, hence to ``history`` and to Keras'
    TensorBoard and CSVLogger; :meth:`RatioTrainStep.fit` puts it first in the callbacks."""

    def on_epoch_end(self, epoch, logs=None):
        optimizer = self.model.optimizer
        if logs is None or not isinstance(optimizer, RatioScaledOptimizer):
            return
        try:
            size = optimizer.nominal_batch_size()
        except BatchSizeUnknown:  # an epoch without a step
            return
        logs["ratio"] = optimizer.current_ratio()
        logs["batch_size"] = size
        logs["learning_rate"] = logs["ratio"] * size


class RatioScheduler(keras.callbacks.Callback):
    """Keras' ``LearningRateScheduler`` for η/S, with the same arguments: at the start of every
    epoch (0-based) ``schedule(epoch, ratio)`` (or ``schedule(epoch)``) returns the η/S of the
    epoch's steps. It needs no batch size, so it works from the first epoch on any data
    (Keras' own scheduler needs S before the first step: see :class:`RatioScaledOptimizer`).
    ``verbose=1`` reports each change on the ``lrbs_tf`` logger."""

    def __init__(self, schedule, verbose=0):
        super().__init__()
        self.schedule, self.verbose = schedule, verbose

    def on_epoch_begin(self, epoch, logs=None):
        optimizer = self.model.optimizer
        if not isinstance(optimizer, RatioScaledOptimizer):
            raise TypeError("RatioScheduler sets η/S: compile with a RatioScaledOptimizer")
        try:
            ratio = self.schedule(epoch, optimizer.current_ratio())
        except TypeError:  # the one-argument form, as in Keras
            ratio = self.schedule(epoch)
        if not isinstance(ratio, float | np.floating) or not ratio >= 0:
            raise ValueError(f"the schedule must return η/S as a float ≥ 0, got {ratio!r}")
        optimizer.set_ratio(float(ratio))
        if self.verbose:
            log.info("epoch %d: RatioScheduler sets η/S to %.6g", epoch + 1, ratio)


@keras.saving.register_keras_serializable(package="lrbs_tf")
class RatioModel(RatioTrainStep, keras.Model):
    """A functional Keras model whose train step feeds the global batch size to the optimizer."""


def as_ratio_model(model: keras.Model) -> keras.Model:
    """The same layers and weights as ``model`` (functional or Sequential), as a
    :class:`RatioModel`."""
    if isinstance(model, RatioTrainStep):
        return model
    if not model.built or not getattr(model, "inputs", None):
        raise ValueError(
            "as_ratio_model needs a built functional or Sequential model; for a "
            "subclassed model, inherit from lrbs_tf.optimizers.RatioTrainStep"
        )
    return RatioModel(inputs=model.inputs, outputs=model.outputs, name=model.name)
