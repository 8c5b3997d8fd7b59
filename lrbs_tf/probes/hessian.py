"""Hessian-vector products of a Keras model's training loss, built on GradientTape.

:class:`HessianOperator` is the Hessian of the mean per-example loss (softmax cross-entropy on
logits by default, or any ``loss(y, outputs) -> per-example losses``) over a fixed subset of
training examples. The subset is processed in batches whose results are averaged with weights
``n_b / N``, so the operator does not depend on the batch size (in ``bn_mode="inference"``).

* It works on a private copy of the model (``keras.models.clone_model``) whose Dropout layers
  are replaced by identities and whose dtype may be float64; the copy's weights are taken from
  the model at construction and by :meth:`refresh`. The model itself is never written to: BN
  moving statistics and weights stay bit-identical. Calls go through ``stateless_call``.
* ``bn_mode="inference"`` (default) uses the moving statistics; ``"batch"`` uses each probe
  batch's statistics (the loss SGD actually differentiated), without updating anything.
* ``method="rr"`` (reverse-over-reverse, default: measured as fast or faster on CPU, see
  ``tools/bench_probes.py``) or ``"fr"`` (forward-over-reverse with ``ForwardAccumulator``).
* The HVP and gradient are ``tf.function``s traced once per operator (vectors are flat, of a
  fixed length); ``trace_counts()`` reports it.
* Under a ``tf.distribute`` strategy (the model's own, by default) the copy is mirrored and
  the probe batches are dealt out to the replicas, whose partial sums are all-reduced: the
  operator, and everything measured with it, is the same with 1 or N replicas.

:class:`lrbs_tf.probes.prober.Prober` runs the estimators of :mod:`lrbs_tf.probes.spectral` on
the operator and returns a dict with every setting, ready for ``results.json``.
"""

from __future__ import annotations

import logging
import time

import keras
import numpy as np
import tensorflow as tf

from lrbs_tf import compat, distribute
from lrbs_tf.probes.settings import BN_MODES, DTYPES, METHODS

log = logging.getLogger(__name__)


def sparse_softmax_cross_entropy(y, logits):
    """Per-example cross-entropy of integer labels and logits (dtype follows the logits)."""
    return tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.cast(y, tf.int32), logits=logits
    )


def _probe_copy(model: keras.Model, dtype: str, sample) -> keras.Model:
    """A copy without Dropout, computing in ``dtype``, with BatchNorm's statistics as sums and
    the same weights: a functional clone layer by layer, or for a subclassed model a new one
    from its config, built on ``sample`` (one example)."""
    if not getattr(model, "inputs", None):
        return _subclassed_copy(model, dtype, sample)

    def clone(layer):
        if isinstance(layer, keras.layers.Dropout):
            return keras.layers.Identity(name=layer.name)
        config = layer.get_config()
        config["dtype"] = dtype
        if isinstance(layer, keras.layers.BatchNormalization):
            config["synchronized"] = False
            return compat.SumMomentsBatchNorm.from_config(config)
        return layer.__class__.from_config(config)

    try:
        copy = keras.models.clone_model(model, clone_function=clone)
    except Exception as e:  # a layer whose config does not rebuild it
        raise ValueError(f"the probes cannot copy {model.name} ({e})") from None
    copy = keras.Model(copy.inputs, copy.outputs, name=f"{model.name}_probe")
    _check_same_weights(model, copy)
    return copy


def batch_layout(n: int, batch_size: int, bn_mode: str, groups: int = 1) -> tuple:
    """``(starts, sizes, group of each batch)`` of the operator's batches over ``n`` examples.

    ``groups`` disjoint, contiguous groups of examples for sampling errors
    (:mod:`lrbs_tf.probes.sampling`), never split inside a batch. In inference mode the
    examples are cut into ``groups`` groups of nearly equal size and each group into batches
    of at most ``batch_size``; in batch mode the batches are the mini-batches whose BatchNorm
    statistics define the loss, and the groups are runs of whole batches (at most one group
    per batch). ``groups=1``: the plain layout."""
    if bn_mode == "batch" or groups <= 1:
        starts = np.arange(0, n, batch_size)
        sizes = np.minimum(batch_size, n - starts)
        group_of = (np.arange(len(starts)) * min(groups, len(starts))) // len(starts)
        return starts, sizes, group_of.astype(np.int32)
    groups = min(groups, n)
    edges = (np.arange(groups + 1) * n) // groups
    starts, sizes, group_of = [], [], []
    for g in range(groups):
        for start in range(edges[g], edges[g + 1], batch_size):
            starts.append(start)
            sizes.append(min(batch_size, edges[g + 1] - start))
            group_of.append(g)
    return np.array(starts), np.array(sizes), np.array(group_of, np.int32)


def _subclassed_copy(model: keras.Model, dtype: str, sample) -> keras.Model:
    """A subclassed model made again from its ``get_config`` under a ``dtype`` policy, its
    Dropout rates set to 0 and its BatchNormalization layers computing sum-based statistics
    (:class:`~lrbs_tf.compat.SumMomentsBatchNorm`), built on ``sample``."""
    name = type(model).__name__
    try:
        config = dict(model.get_config())
    except NotImplementedError:
        raise ValueError(
            f"the probes copy a subclassed model from its config: give {name} a get_config "
            "returning its __init__ arguments"
        ) from None
    config.pop("dtype", None)
    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy(dtype)
    try:
        copy = model.__class__.from_config(config)
    except Exception as e:
        raise ValueError(f"the probes cannot make {name} again from its config ({e})") from None
    finally:
        keras.config.set_dtype_policy(policy)
    for layer in compat.all_layers(copy):
        if isinstance(layer, keras.layers.Dropout):
            layer.rate = 0.0
        if type(layer) is keras.layers.BatchNormalization:
            compat.sum_moments(layer)
    copy(tf.constant(np.asarray(sample)[:1], dtype), training=False)
    _check_same_weights(model, copy)
    return copy


def _check_same_weights(model, copy) -> None:
    if [tuple(w.shape) for w in model.weights] != [tuple(w.shape) for w in copy.weights]:
        raise ValueError("the probe copy of the model has different weights")


class HessianOperator:
    """H v for the mean training loss of ``model`` on ``(x, y)``; see the module docstring.

    Args:
        model: a built Keras model: functional, Sequential, or subclassed with a
            ``get_config`` (its probe copy is made from the config).
        x, y: the probe examples (the caller chooses and records the subset).
        batch_size: examples per HVP batch (memory); results do not depend on it in inference
            mode.
        bn_mode: ``"inference"`` or ``"batch"``.
        dtype: ``"float32"`` or ``"float64"``.
        method: ``"rr"`` or ``"fr"``.
        loss: per-example loss ``fn(y, outputs)``; default softmax cross-entropy on logits.
        strategy: a ``tf.distribute`` strategy, None for one device, or ``"auto"``: the
            model's (the strategy in whose scope it was built).
    """

    def __init__(
        self,
        model: keras.Model,
        x,
        y,
        batch_size: int = 1000,
        bn_mode: str = "inference",
        dtype: str = "float32",
        method: str = "rr",
        loss=None,
        strategy="auto",
        on_call=None,
        groups: int = 1,
    ):
        if bn_mode not in BN_MODES:
            raise ValueError(f"bn_mode must be one of {BN_MODES}, got {bn_mode!r}")
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        if len(x) != len(y) or len(x) == 0:
            raise ValueError(f"need as many labels as examples (got {len(x)} and {len(y)})")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.model = model
        self.on_call = on_call  # told what each call computes (e.g. a multi-worker heartbeat)
        self.bn_mode, self.dtype, self.method = bn_mode, dtype, method
        self.batch_size = int(batch_size)
        self.loss = loss or sparse_softmax_cross_entropy
        self.num_examples = len(x)
        self.strategy = distribute.model_strategy(model) if strategy == "auto" else strategy
        with distribute.scope(self.strategy):
            self.copy = _probe_copy(model, dtype, x[:1])
        self.refresh()
        self.params = [v.value for v in self.copy.trainable_variables]
        self.state = [v.value for v in self.copy.non_trainable_variables]
        self.shapes = [tuple(p.shape) for p in self.params]
        self.sizes = [int(np.prod(s)) for s in self.shapes]
        self.dim = int(sum(self.sizes))
        with tf.device("/cpu:0"):
            self.x = tf.constant(
                np.asarray(x), dtype=dtype if np.asarray(x).dtype.kind == "f" else None
            )
            self.y = tf.constant(np.asarray(y))
        starts, sizes, group_of = batch_layout(self.num_examples, self.batch_size, bn_mode, groups)
        self.batch_starts = tf.constant(starts, tf.int64)
        self.batch_sizes = tf.constant(sizes, tf.int64)
        self.groups = int(group_of.max()) + 1
        self.batch_group = tf.constant(group_of, tf.int32)
        self.group_weights = np.bincount(group_of, weights=sizes) / self.num_examples
        self.matvecs = 0
        self.last_seconds = 0.0
        self._hvp = tf.function(self._hvp_impl, input_signature=[tf.TensorSpec([self.dim], dtype)])
        self._grad = tf.function(
            self._grad_impl, input_signature=[tf.TensorSpec([self.dim], dtype)]
        )
        self._group_hvp = tf.function(
            self._group_hvp_impl, input_signature=[tf.TensorSpec([self.dim], dtype)]
        )

    # -- settings -------------------------------------------------------------------------
    def settings(self) -> dict:
        return {
            "num_examples": self.num_examples,
            "batch_size": self.batch_size,
            "bn_mode": self.bn_mode,
            "dtype": self.dtype,
            "method": self.method,
            "num_parameters": self.dim,
            "dropout": "off",
            "replicas": distribute.replicas(self.strategy),
            "loss": getattr(self.loss, "__name__", repr(self.loss)),
        }

    def refresh(self) -> None:
        """Copy the model's current weights (trainable and BN statistics) into the probe copy."""
        for src, dst in zip(self.model.weights, self.copy.weights):
            dst.assign(tf.cast(src.value, dst.dtype))

    def trace_counts(self) -> dict:
        return {
            "hvp": self._hvp.experimental_get_tracing_count(),
            "gradient": self._grad.experimental_get_tracing_count(),
            "group_hvp": self._group_hvp.experimental_get_tracing_count(),
        }

    # -- flat vectors ---------------------------------------------------------------------
    def _split(self, flat):
        return [tf.reshape(t, s) for t, s in zip(tf.split(flat, self.sizes), self.shapes)]

    @staticmethod
    def _flat(tensors):
        return tf.concat([tf.reshape(t, [-1]) for t in tensors], axis=0)

    def flatten_numpy(self, tensors) -> np.ndarray:
        return np.concatenate([np.asarray(t, np.float64).ravel() for t in tensors])

    # -- the loss of one batch ------------------------------------------------------------
    def _batch(self, i):
        start, size = self.batch_starts[i], self.batch_sizes[i]
        return self.x[start : start + size], self.y[start : start + size], size

    def _batch_loss(self, params, x, y):
        outputs, _ = self.copy.stateless_call(
            params, self.state, x, training=self.bn_mode == "batch"
        )
        return tf.reduce_mean(self.loss(y, outputs))

    def batch_gradient(self, x, y, training: bool):
        """The flat gradient of the mean loss of one batch at the operator's weights, BatchNorm
        with batch statistics when ``training`` (in a ``tf.function``; per-example gradients
        are this on batches of one)."""
        with tf.GradientTape() as tape:
            tape.watch(self.params)
            outputs, _ = self.copy.stateless_call(self.params, self.state, x, training=training)
            loss = tf.reduce_mean(self.loss(y, outputs))
        return self._flat(tape.gradient(loss, self.params))

    def _weighted_sum(self, per_batch):
        """Σ_b (n_b / N) · per_batch(x_b, y_b) for functions returning a list of tensors."""

        def partial(replica, replicas):
            total = [tf.zeros(s, self.dtype) for s in self.shapes]
            for i in tf.range(replica, tf.size(self.batch_starts), replicas):
                x, y, size = self._batch(i)
                weight = tf.cast(size, self.dtype) / self.num_examples
                total = [t + weight * r for t, r in zip(total, per_batch(x, y))]
            return total

        return self.replica_sum(partial)

    def replica_sum(self, partial):
        """``partial(replica, replicas)`` summed over the replicas (in a ``tf.function``).

        ``partial`` returns a list of tensors for its share of the work (e.g. batches
        ``replica, replica + replicas, …``); without a strategy it is ``partial(0, 1)``.
        """
        if self.strategy is None:
            return partial(0, 1)

        def on_replica():
            ctx = tf.distribute.get_replica_context()
            share = partial(
                tf.cast(ctx.replica_id_in_sync_group, tf.int32), ctx.num_replicas_in_sync
            )
            return ctx.all_reduce(tf.distribute.ReduceOp.SUM, share)

        out = self.strategy.run(on_replica)
        return [self.strategy.experimental_local_results(t)[0] for t in out]

    def _hvp_impl(self, flat_v):
        return self._flat(self._weighted_sum(self._batch_hvp(self._split(flat_v))))

    def _batch_hvp(self, v):
        """``(x, y) -> H_batch v`` (a list of tensors) by the operator's method."""
        params = self.params

        def rr(x, y):
            with tf.GradientTape() as outer:
                with tf.GradientTape() as inner:
                    loss = self._batch_loss(params, x, y)
                grads = inner.gradient(loss, params)
                dot = tf.add_n([tf.reduce_sum(g * vi) for g, vi in zip(grads, v)])
            return outer.gradient(dot, params)

        def fr(x, y):
            with tf.autodiff.ForwardAccumulator(params, v) as acc:
                with tf.GradientTape() as tape:
                    loss = self._batch_loss(params, x, y)
                grads = tape.gradient(loss, params)
            return acc.jvp(grads)

        return rr if self.method == "rr" else fr

    def _group_hvp_impl(self, flat_v):
        """Each group's H_g v (the Hessian of the mean loss over the group's examples), as a
        ``[groups, dim]`` tensor: one pass over the examples, like :meth:`_hvp_impl`."""
        batch_hvp, groups = self._batch_hvp(self._split(flat_v)), self.groups
        sizes = tf.cast(
            tf.math.unsorted_segment_sum(self.batch_sizes, self.batch_group, groups), self.dtype
        )

        def partial(replica, replicas):
            total = tf.zeros([groups, self.dim], self.dtype)
            for i in tf.range(replica, tf.size(self.batch_starts), replicas):
                x, y, size = self._batch(i)
                hv = self._flat(batch_hvp(x, y))
                g = self.batch_group[i]
                weight = tf.cast(size, self.dtype) / sizes[g]
                total += tf.one_hot(g, groups, dtype=self.dtype)[:, None] * (weight * hv)[None, :]
            return [total]

        return self.replica_sum(partial)[0]

    def _grad_impl(self, flat_delta):
        delta = self._split(flat_delta)

        def grad(x, y):
            shifted = [p + d for p, d in zip(self.params, delta)]  # this replica's copy
            with tf.GradientTape() as tape:
                tape.watch(shifted)
                loss = self._batch_loss(shifted, x, y)
            return tape.gradient(loss, shifted)

        return self._flat(self._weighted_sum(grad))

    # -- numpy interface for the estimators -------------------------------------------------
    def matvec(self, v: np.ndarray) -> np.ndarray:
        """H v for a flat numpy vector (float64 out)."""
        self.matvecs += 1
        if self.on_call is not None:
            self.on_call("computing Hessian-vector products")
        tick = time.perf_counter()
        out = self._hvp(tf.constant(v, self.dtype)).numpy().astype(np.float64)
        self.last_seconds = time.perf_counter() - tick  # the cost of one HVP, once traced
        return out

    def group_matvec(self, v: np.ndarray) -> np.ndarray:
        """``[groups, dim]``: each group's H_g v (float64); ``group_weights @ result`` is H v.
        One pass over the examples (the cost of one :meth:`matvec`)."""
        self.matvecs += 1
        if self.on_call is not None:
            self.on_call("computing Hessian-vector products")
        tick = time.perf_counter()
        out = self._group_hvp(tf.constant(v, self.dtype)).numpy().astype(np.float64)
        self.last_seconds = time.perf_counter() - tick
        return out

    def gradient(self, delta: np.ndarray | None = None) -> np.ndarray:
        """∇L at θ + delta (flat, float64); θ itself when ``delta`` is None."""
        delta = np.zeros(self.dim) if delta is None else delta
        if self.on_call is not None:
            self.on_call("computing gradients for the probes")
        return self._grad(tf.constant(delta, self.dtype)).numpy().astype(np.float64)

    def loss_value(self) -> float:
        total = 0.0
        for i in range(int(self.batch_starts.shape[0])):
            x, y, size = self._batch(i)
            total += float(self._batch_loss(self.params, x, y)) * int(size) / self.num_examples
        return total
