"""Every use of Keras or TensorFlow internals, in one place, with the versions they were checked on.

lrbs_tf needs a few things Keras 3 does not expose: the train step's loss pieces (to reduce the
loss exactly over replicas), the hook that builds a model from its first batch (which fails
under tf.distribute), BatchNormalization's batch statistics (whose second derivatives
``tf.nn.moments`` gets wrong), an optimizer's own variables and raw learning rate, a model's
nested layers, running a functional model's graph with a substitute for each layer (for
per-example gradient norms), and the function Keras uses to reduce step logs across workers
(keras-team/keras#20585). Each is reached through a function here; :func:`problems` lists the
internals that are missing in the installed Keras, and ``tests/test_compat.py`` fails when one
is, so an upgrade is re-examined rather than silently broken. setup.cfg pins the tested range.
"""

from __future__ import annotations

import inspect
import logging

import keras
import tensorflow as tf

log = logging.getLogger(__name__)

# The Keras releases these internals were checked on (setup.cfg: keras>=3.10,<3.16).
CHECKED_KERAS = ("3.10", "3.11", "3.12", "3.13", "3.14", "3.15")


class KerasChanged(RuntimeError):
    """An internal of Keras a work-around here relies on is gone; the message says which."""


def problems() -> list[str]:
    """The internals this module relies on that the installed Keras lacks (empty: all there)."""
    out = []
    if not keras.version().startswith(CHECKED_KERAS):
        out.append(f"Keras {keras.version()} is outside the checked versions {CHECKED_KERAS}")
    for owner, name, args in (
        (keras.Model, "_compute_loss", ("x", "y", "y_pred", "sample_weight", "training")),
        (keras.Model, "_maybe_symbolic_build", ("iterator", "data_batch")),
        (keras.Model, "_symbolic_build", ("data_batch",)),
        (keras.Model, "_flatten_layers", ()),
        (keras.layers.BatchNormalization, "_moments", ("inputs", "mask")),
    ):
        method = getattr(owner, name, None)
        if method is None:
            out.append(f"{owner.__name__}.{name} is gone")
        elif not set(args) <= set(inspect.signature(method).parameters):
            out.append(f"{owner.__name__}.{name} no longer takes {args}")
    try:
        from keras.src.losses.loss import unscale_loss_for_distribution  # noqa: F401
    except ImportError:
        out.append("keras.src.losses.loss.unscale_loss_for_distribution is gone")
    try:
        from keras.src.backend.tensorflow import trainer

        if not hasattr(trainer, "_collective_all_reduce_multi_worker"):
            out.append("trainer._collective_all_reduce_multi_worker is gone")
    except ImportError:
        out.append("keras.src.backend.tensorflow.trainer is gone")
    from keras.src.models.functional import Functional

    for name, args in (
        ("_run_through_graph", ("inputs", "operation_fn")),
        ("_standardize_inputs", ("inputs",)),
    ):
        method = getattr(Functional, name, None)
        if method is None or not set(args) <= set(inspect.signature(method).parameters):
            out.append(f"Functional.{name}{args} is gone")
    probe = keras.Sequential([keras.Input((2,)), keras.layers.BatchNormalization()])
    if not hasattr(probe.layers[0], "_inbound_nodes"):
        out.append("Layer._inbound_nodes is gone")
    if not hasattr(probe.layers[0], "_reduction_axes"):
        out.append("BatchNormalization._reduction_axes is gone")
    if not hasattr(keras.optimizers.SGD(0.1), "_learning_rate"):
        out.append("Optimizer._learning_rate is gone")
    try:
        from keras.src.saving import saving_lib

        if "filepath" not in inspect.signature(saving_lib.save_model).parameters:
            out.append("keras.src.saving.saving_lib.save_model no longer takes filepath")
    except ImportError:
        out.append("keras.src.saving.saving_lib is gone")
    return out


# -- the train step ------------------------------------------------------------------------


def compute_loss(model, x, y, y_pred, sample_weight):
    """The compiled loss of a batch, as Keras' own train step computes it (scaled for
    distribution: divided by the replica count)."""
    return model._compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True)


def unscale_loss(loss):
    """Undo Keras' division of a replica's loss by the replica count."""
    from keras.src.losses.loss import unscale_loss_for_distribution

    return unscale_loss_for_distribution(loss)


def loss_tracker(model):
    """The metric behind Keras' ``loss`` log."""
    return model._loss_tracker


def takes_training_arg(model) -> bool:
    return model._call_has_training_arg


def keras_symbolic_build(model, iterator=None, data_batch=None):
    """Keras' own ``_maybe_symbolic_build`` (what a model's override falls back to)."""
    return keras.Model._maybe_symbolic_build(model, iterator=iterator, data_batch=data_batch)


def symbolic_build(model, data_batch):
    model._symbolic_build(data_batch=data_batch)


def model_strategy(model):
    """The tf.distribute strategy a model was built under (None outside one)."""
    return getattr(model, "_distribute_strategy", None)


# -- saving ----------------------------------------------------------------------------------


def save_model_bytes(model) -> bytes:
    """A model's ``.keras`` archive, serialised in memory. Keras' public ``save_model`` takes
    only paths ending in ``.keras``; its ``saving_lib`` takes a file object too, which lets
    lrbs_tf write the archive itself (atomically, never through a link)."""
    import io

    from keras.src.saving import saving_lib

    buffer = io.BytesIO()
    saving_lib.save_model(model, buffer)
    return buffer.getvalue()


# -- optimizers, layers ----------------------------------------------------------------------


def raw_learning_rate(optimizer):
    """An optimizer's learning rate as given: a float, a variable or a schedule."""
    return optimizer._learning_rate


def own_variables(optimizer) -> list:
    """The variables an optimizer created itself (not those of an optimizer it wraps)."""
    return optimizer._variables


def all_layers(model) -> list:
    """Every layer of a model, nested ones included."""
    return list(model._flatten_layers())


def run_graph(model, inputs, operation_fn):
    """Run a functional model on ``inputs`` as its ``call`` does (inputs standardised, no
    masks), calling ``operation_fn(layer)(*args, **kwargs)`` at each node of its graph instead
    of ``layer(*args, **kwargs)``: how the gradient-noise probe substitutes its tapped layers."""
    outputs = model._run_through_graph(model._standardize_inputs(inputs), operation_fn=operation_fn)
    if isinstance(outputs, list | tuple) and len(outputs) == 1:
        return outputs[0]  # as Functional.call unpacks a single output
    return outputs


def layer_calls(layer) -> int:
    """How many nodes of the graphs it is in call ``layer`` (more than one: shared weights)."""
    return len(layer._inbound_nodes)


def sum_moments(layer) -> None:
    """Make a BatchNormalization layer of a model compute :class:`SumMomentsBatchNorm`'s
    statistics, in place (a subclassed model's layers cannot be swapped for others)."""
    layer.__class__ = SumMomentsBatchNorm
    layer.synchronized = False


class SumMomentsBatchNorm(keras.layers.BatchNormalization):
    """BatchNormalization whose batch statistics are E[x] and E[x²] − E[x]² of the batch it is
    given, instead of tf.nn.moments: that one's stop_gradient on the mean inside the variance
    leaves first derivatives right but makes every second derivative through the batch
    statistics wrong. Never all-reduced across replicas: under a strategy each replica probes
    whole batches of its own."""

    def _moments(self, inputs, mask):
        if mask is not None:
            return super()._moments(inputs, mask)
        axes = self._reduction_axes
        mean = tf.reduce_mean(inputs, axis=axes)
        variance = tf.reduce_mean(tf.square(inputs), axis=axes) - tf.square(mean)
        return mean, tf.maximum(variance, tf.zeros_like(variance))


# -- Keras 3 + MultiWorkerMirroredStrategy ---------------------------------------------------


def keras_multiworker_fix() -> None:
    """Make Keras 3 ``fit``/``evaluate`` run under MultiWorkerMirroredStrategy.

    Keras 3 (checked: 3.15.1) reduces the per-replica step logs of a multi-worker strategy with
    ``strategy.reduce("MEAN", scalar, axis=0)``, which fails ("Invalid reduction dimension 0
    for input with 0 dimensions"; keras-team/keras#20585, tensorflow/tensorflow#72388). This
    makes ``keras.src.backend.tensorflow.trainer._collective_all_reduce_multi_worker`` answer
    False, so step logs are reduced over the local replicas only (they feed the progress bar;
    the epoch metrics lrbs_tf records are read from the metric variables, summed over all
    workers). The other failure of #20585 (all-reducing the first batch) is avoided in
    :meth:`lrbs_tf.core.optimizers.RatioTrainStep._maybe_symbolic_build`.
    Raises :class:`KerasChanged` if Keras no longer has the function.
    """
    try:
        from keras.src.backend.tensorflow import trainer as keras_tf_trainer
    except ImportError as e:
        raise KerasChanged(
            f"Keras {keras.version()} moved its TensorFlow trainer ({e}); "
            "the multi-worker work-around needs review"
        ) from None
    current = getattr(keras_tf_trainer, "_collective_all_reduce_multi_worker", None)
    if current is None:
        raise KerasChanged(
            f"Keras {keras.version()} has no _collective_all_reduce_multi_"
            "worker; the multi-worker work-around needs review"
        )
    if getattr(current, "lrbs_patched", False):
        return
    if not keras.version().startswith(CHECKED_KERAS):
        log.warning(
            "Keras %s is newer than the versions the multi-worker work-around was checked on (%s)",
            keras.version(),
            ", ".join(CHECKED_KERAS),
        )

    def local_reduction(strategy):
        return False

    local_reduction.lrbs_patched = True
    keras_tf_trainer._collective_all_reduce_multi_worker = local_reduction
