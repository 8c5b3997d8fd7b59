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
"""

from __future__ import annotations

import keras
import tensorflow as tf

from lrbs_tf import compat
from lrbs_tf.core.steplog import RATIO_KEY, StepLog, split_step_ratio

__all__ = [
    "RatioScaledOptimizer",
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


@keras.saving.register_keras_serializable(package="lrbs_tf")
class RatioScaledOptimizer(keras.optimizers.Optimizer):
    """Wrap ``inner_optimizer`` so that its learning rate is ``ratio × global batch size``.

    Args:
        inner_optimizer: a Keras optimizer built with a float learning rate (default: plain SGD,
            momentum 0, as in Jastrzębski et al. 2018). Its learning rate is overwritten.
        ratio: η/S, the learning rate per example of the batch.

    ``optimizer.learning_rate`` is the inner optimizer's (the η applied in the last step), so
    Keras' TensorBoard callback logs it as usual.
    """

    def __init__(self, inner_optimizer=None, ratio=1e-4, name=None, **kwargs):
        if kwargs:
            raise ValueError(
                f"RatioScaledOptimizer does not take {sorted(kwargs)}; "
                "set them on the inner optimizer"
            )
        if inner_optimizer is None:
            inner_optimizer = keras.optimizers.SGD(learning_rate=0.0)
        if not isinstance(inner_optimizer, keras.optimizers.Optimizer):
            raise TypeError(f"inner_optimizer must be a Keras optimizer, got {inner_optimizer!r}")
        if isinstance(
            compat.raw_learning_rate(inner_optimizer),
            keras.optimizers.schedules.LearningRateSchedule,
        ):
            raise ValueError(
                "the inner optimizer must have a float learning rate, not a "
                "LearningRateSchedule: the wrapper sets it every step"
            )
        super().__init__(learning_rate=0.0, name=name)
        self.inner_optimizer = inner_optimizer
        self.initial_ratio = float(ratio)

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
        ``ratio``, when a schedule gives it): η = (η/S) × S for exactly this step."""
        if not self.built:
            with keras.name_scope(self.name, caller=self):
                self.build(trainable_variables)
            self.built = True
        self.batch_size.assign(tf.cast(batch_size, tf.float32))
        if ratio is not None:
            self.ratio.assign(tf.cast(ratio, tf.float32))
        self.inner_optimizer.learning_rate.assign(self.ratio * self.batch_size)
        return self.inner_optimizer.apply(grads, trainable_variables)

    def apply(self, grads, trainable_variables=None):
        raise ValueError(
            "RatioScaledOptimizer needs the global batch size of every step: train with "
            "lrbs_tf.optimizers.RatioModel (as_ratio_model(model)) or the RatioTrainStep "
            "mixin, or call optimizer.apply_step(grads, variables, batch_size)"
        )

    @property
    def learning_rate(self):
        return self.inner_optimizer.learning_rate

    @learning_rate.setter
    def learning_rate(self, value):
        raise AttributeError(
            "the learning rate of a RatioScaledOptimizer is ratio × batch size; "
            "set it through .ratio (or set_step) instead"
        )

    @property
    def iterations(self):
        return self.inner_optimizer.iterations

    def scale_loss(self, loss):
        return self.inner_optimizer.scale_loss(loss)

    def finalize_variable_values(self, var_list):
        self.inner_optimizer.finalize_variable_values(var_list)

    def get_config(self):
        return {
            "name": self.name,
            "ratio": self.initial_ratio,
            "inner_optimizer": keras.saving.serialize_keras_object(self.inner_optimizer),
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        inner = keras.saving.deserialize_keras_object(
            config.pop("inner_optimizer"), custom_objects=custom_objects
        )
        return cls(inner, **config)


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
    """

    step_log = None

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
        if scaled and not optimizer.built:  # building here costs a second trace: pre-build
            optimizer.build(self.trainable_variables)
        elif not scaled and step_ratio is not None:
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
        grads = tape.gradient(loss, weights)
        if scaled:
            optimizer.apply_step(grads, weights, batch, step_ratio)
        else:
            optimizer.apply_gradients(zip(grads, weights))
        logs = self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)
        if self.step_log is not None:
            batch_loss = tf.cast(local_loss, tf.float32)
            if replicas > 1:
                batch_loss = (
                    ctx.all_reduce(
                        tf.distribute.ReduceOp.SUM, batch_loss * tf.cast(local, tf.float32)
                    )
                    / batch
                )
            lr = tf.convert_to_tensor(optimizer.learning_rate)
            ratio = (
                tf.convert_to_tensor(optimizer.ratio)
                if isinstance(optimizer, RatioScaledOptimizer)
                else lr / batch
            )
            self.step_log.record(optimizer.iterations, (batch_loss, batch, lr, ratio))
        return logs

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
