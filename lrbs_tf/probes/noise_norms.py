"""Exact per-example gradient norms from one ordinary backward pass (no per-example gradients).

Tr C, ‖g‖² and B_simple (:mod:`lrbs_tf.probes.noise`) need only the batch gradient Σ_i g_i and
the sum of the per-example squared norms Σ_i ‖g_i‖², with g_i = ∇L_i:

    Tr C (unbiased) = (Σ_i ‖g_i‖² − ‖Σ_i g_i‖² / n) / (n − 1).

One backward pass of the summed loss Σ_j L_j gives, at each layer with weights, the gradient
δ = ∂(Σ_j L_j)/∂z of its pre-activation output z. Without BatchNorm in batch mode no
example's loss depends on another example's z, so row i of δ is ∂L_i/∂z_i, and with the layer
input a each layer's per-example gradient, its norm, and their sum over the batch (that
layer's part of Σ_i g_i) follow from (a_i, δ_i) alone:

* ``Dense`` on 2-D input (Goodfellow 2015, arXiv 1510.01799): ‖∂L_i/∂W‖² = ‖a_i‖²·‖δ_i‖², bias
  ‖δ_i‖². On higher-rank input (positions q = 1…T) the kernel gradient is Σ_q a_q δ_qᵀ;
* ``Conv1D`` / ``Conv2D`` (channels last, ungrouped, any stride, dilation and padding, causal
  included): the same with a_q the input patch under output position q (from
  ``tf.image.extract_patches`` with the layer's sizes, strides, dilation and padding), p its
  length and d the filters. Either the direct form ‖Σ_q a_q δ_qᵀ‖² (the [p, d] gradient per
  example) or the ghost norm Σ_{q,q'} (a_q·a_q')(δ_q·δ_q') (a [T, T] Gram per example);
  ghost when 2T² ≤ p·d (the fastDP rule of Bu et al. 2022, arXiv 2205.10683). Bias:
  ‖Σ_q δ_q‖²;
* ``DepthwiseConv2D``: the direct form per input channel, Σ_q a_{q,k,c} δ_{q,c,m};
* ``BatchNormalization`` with moving statistics and ``LayerNormalization``: y = x̂·γ + β, so
  with δ = ∂/∂y the per-example γ gradient is Σ_positions δ ⊙ x̂ and the β gradient
  Σ_positions δ (x̂ from the moving statistics, or normalised per example);
* ``Embedding``: the per-example gradient of the table is, for each row v the example touches,
  Σ_{t: id_t = v} δ_t (repeated indices add up before squaring).

Layers without weights are run as they are. A layer with trainable weights and no rule here
(another type, shared between nodes, grouped or channels-first convolutions, LoRA or quantized
kernels, partly frozen weights, BatchNorm renorm), BatchNorm in batch mode (examples coupled
through the batch statistics: per-example gradients are undefined) and masks (an
``Embedding(mask_zero=True)`` or ``Masking``) make :func:`plan` name the layer, and the probe
falls back to the micro-batch estimator (:class:`lrbs_tf.probes.noise.MicroBatchGradients`).

The pass runs on the operator's private copy of the model inside a ``keras.StatelessScope``
(no variable of the model or the copy changes), replacing each tapped layer by its kernel op,
bias, a zero "tap" added to z, then the activation; δ is the gradient with respect to the tap
(the tape differentiates with respect to the taps only, so it computes no weight gradients of
its own). Cost: a forward pass, the backward pass to the taps and, per layer, about one weight
gradient (Goodfellow's product and the direct form) or two Gram matrices (ghost): about one
ordinary gradient. Nothing goes through pfor, whose missing Conv2DBackpropFilter rule turns
``tf.vectorized_map`` into a per-example while_loop on convolutions. ``tools/bench_noise.py``
measures both paths; ``tests/test_noise_norms.py`` tests this one against ``vectorized_map``.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from lrbs_tf import compat


def _kernel_stats(a, delta):
    """Per-example ‖Σ_q a_q δ_qᵀ‖² and the summed gradient Σ_i Σ_q a_q δ_qᵀ, for a [B, T, p]
    and δ [B, T, d]: Goodfellow's product (T = 1), the ghost norm, or the direct form."""
    positions, p, d = a.shape[1], a.shape[2], delta.shape[2]
    if positions is None or 2 * positions * positions > p * d:  # direct
        per_example = tf.einsum("btp,btd->bpd", a, delta)
        return tf.reduce_sum(tf.square(per_example), [1, 2]), tf.reduce_sum(per_example, 0)
    summed = tf.matmul(tf.reshape(a, [-1, p]), tf.reshape(delta, [-1, d]), transpose_a=True)
    if positions == 1:
        sq = tf.reduce_sum(tf.square(a), [1, 2]) * tf.reduce_sum(tf.square(delta), [1, 2])
    else:
        gram_a = tf.einsum("btp,bsp->bts", a, a)
        sq = tf.reduce_sum(gram_a * tf.einsum("btd,bsd->bts", delta, delta), [1, 2])
    return sq, summed


def _positions(x, channels: int):
    """x as [B, T, channels] with T static when the shape is."""
    known = x.shape[1:-1]
    t = int(np.prod(known)) if all(s is not None for s in known) else -1
    return tf.reshape(x, [tf.shape(x)[0], t, channels])


def _with_bias(layer, kernel_sq, kernel_grad, delta):
    """Add the bias (gradient Σ_q δ_q per example) to a kernel's statistics."""
    if getattr(layer, "bias", None) is None:
        return kernel_sq, [kernel_grad, None]
    per_example = tf.reduce_sum(_positions(delta, delta.shape[-1]), 1)
    sq = kernel_sq + tf.reduce_sum(tf.square(per_example), -1)
    return sq, [kernel_grad, tf.reduce_sum(per_example, 0)]


def _activate(layer, z, tap):
    z = tap(z)
    return layer.activation(z) if layer.activation is not None else z


def _not_plain(layer) -> str | None:
    if getattr(layer, "lora_enabled", False):
        return "LoRA"
    if getattr(layer.dtype_policy, "quantization_mode", None):
        return "quantized"
    return None


class DenseRule:
    """Goodfellow's ‖a‖²·‖δ‖² on 2-D input; the direct or ghost form over positions above.

    Each rule: ``check(layer)`` (None, or why it does not apply), ``forward(layer, x, tap)``
    (the output, with ``tap`` applied to z, and what ``stats`` needs) and ``stats(layer,
    saved, delta)``: ‖g_i‖² of the layer's weights per example and their summed gradients (in
    the order of :data:`COUNTED`, None for an absent weight).
    """

    @staticmethod
    def check(layer):
        return _not_plain(layer)

    @staticmethod
    def forward(layer, x, tap):
        a = tf.cast(x, layer.compute_dtype)
        z = keras.ops.matmul(a, layer.kernel)
        if layer.bias is not None:
            z = z + layer.bias
        return _activate(layer, z, tap), a

    @staticmethod
    def stats(layer, a, delta):
        sq, grad = _kernel_stats(_positions(a, a.shape[-1]), _positions(delta, delta.shape[-1]))
        return _with_bias(layer, sq, grad, delta)


class ConvRule:
    """Conv1D / Conv2D: patches of the input under each output position, then as Dense."""

    @staticmethod
    def check(layer):
        if layer.data_format != "channels_last":
            return "channels_first"
        if getattr(layer, "groups", 1) != 1:
            return "grouped"
        return _not_plain(layer)

    @staticmethod
    def forward(layer, x, tap):
        a, padding = tf.cast(x, layer.compute_dtype), layer.padding
        if padding == "causal":  # Conv1D: pad on the left, then a valid convolution
            left = layer.dilation_rate[0] * (layer.kernel_size[0] - 1)
            a, padding = tf.pad(a, [[0, 0], [left, 0], [0, 0]]), "valid"
        z = keras.ops.conv(
            a,
            layer.kernel,
            strides=list(layer.strides),
            padding=padding,
            dilation_rate=layer.dilation_rate,
            data_format="channels_last",
        )
        if layer.use_bias:
            z = z + layer.bias
        return _activate(layer, z, tap), (a, padding)

    @staticmethod
    def stats(layer, saved, delta):
        patches = _patches(layer, *saved)
        sq, grad = _kernel_stats(
            _positions(patches, patches.shape[-1]), _positions(delta, delta.shape[-1])
        )
        return _with_bias(layer, sq, tf.reshape(grad, layer.kernel.shape), delta)


def _patches(layer, a, padding):
    """[B, Ho, Wo, kh·kw·C_in]: the input patch under each output position of ``layer``
    (a Conv1D's input as one row), flattened in the kernel's (kh, kw, C_in) order."""
    two = lambda v: [1, *v] if len(v) == 1 else list(v)  # noqa: E731
    if a.shape.rank == 3:
        a = a[:, None]
    kh, kw = two(layer.kernel_size)
    sh, sw = two(layer.strides)
    dh, dw = two(layer.dilation_rate)
    return tf.image.extract_patches(
        a, [1, kh, kw, 1], [1, sh, sw, 1], [1, dh, dw, 1], padding.upper()
    )


class DepthwiseRule:
    """DepthwiseConv2D: per channel c and multiplier m, Σ_q a_{q,k,c} δ_{q,c,m} (direct)."""

    @staticmethod
    def check(layer):
        if layer.data_format != "channels_last":
            return "channels_first"
        return _not_plain(layer)

    @staticmethod
    def forward(layer, x, tap):
        a = tf.cast(x, layer.compute_dtype)
        z = keras.ops.depthwise_conv(
            a,
            layer.kernel,
            strides=layer.strides,
            padding=layer.padding,
            dilation_rate=layer.dilation_rate,
            data_format="channels_last",
        )
        if layer.use_bias:
            z = z + layer.bias
        return _activate(layer, z, tap), (a, layer.padding)

    @staticmethod
    def stats(layer, saved, delta):
        kh, kw, channels, mult = layer.kernel.shape
        patches = _positions(_patches(layer, *saved), kh * kw * channels)
        b = tf.shape(patches)[0]
        patches = tf.reshape(patches, [b, -1, kh * kw, channels])
        grads = tf.reshape(_positions(delta, channels * mult), [b, -1, channels, mult])
        per_example = tf.einsum("btkc,btcm->bkcm", patches, grads)
        sq = tf.reduce_sum(tf.square(per_example), [1, 2, 3])
        kernel = tf.reshape(tf.reduce_sum(per_example, 0), layer.kernel.shape)
        return _with_bias(layer, sq, kernel, delta)


class NormRule:
    """BatchNormalization (moving statistics) and LayerNormalization: y = x̂·γ + β."""

    @staticmethod
    def check(layer):
        return "renorm" if getattr(layer, "renorm", False) else None

    @staticmethod
    def forward(layer, x, tap):
        batch_norm = isinstance(layer, keras.layers.BatchNormalization)
        out = layer(x, training=False) if batch_norm else layer(x)
        return tap(out), _normalized(layer, x, batch_norm)

    @staticmethod
    def stats(layer, xhat, delta):
        delta = tf.cast(delta, xhat.dtype)
        params = _param_axes(layer, xhat.shape.rank)
        positions = [i for i in range(1, xhat.shape.rank) if i not in params]
        rest = list(range(1, 1 + len(params)))  # the parameter axes after the reduction
        sq, grads = 0.0, []
        for name, per_example in (
            ("gamma", lambda: tf.reduce_sum(delta * xhat, positions)),
            ("beta", lambda: tf.reduce_sum(delta, positions)),
        ):
            if getattr(layer, name, None) is None:
                grads.append(None)
                continue
            g = per_example()
            sq += tf.reduce_sum(tf.square(g), rest)
            grads.append(tf.reduce_sum(g, 0))
        return sq, grads


def _param_axes(layer, rank: int) -> list[int]:
    axes = layer.axis if isinstance(layer.axis, list | tuple) else [layer.axis]
    return sorted(a % rank for a in axes)


def _normalized(layer, x, batch_norm: bool):
    """x̂: (x − moving mean)/√(moving variance + ε) for BatchNorm; per example for LayerNorm."""
    x = tf.cast(x, keras.backend.result_type(x.dtype, "float32"))
    if not batch_norm:
        return keras.ops.layer_normalization(
            x, None, None, layer.axis, layer.epsilon, rms_scaling=layer.rms_scaling
        )
    shape = [1] * x.shape.rank
    (axis,) = _param_axes(layer, x.shape.rank)
    shape[axis] = x.shape[axis]
    mean = tf.reshape(tf.cast(layer.moving_mean, x.dtype), shape)
    variance = tf.reshape(tf.cast(layer.moving_variance, x.dtype), shape)
    return (x - mean) * tf.math.rsqrt(variance + layer.epsilon)


class EmbeddingRule:
    """Embedding: Σ over the rows an example touches of ‖Σ_{t: id_t = v} δ_t‖²."""

    @staticmethod
    def check(layer):
        return "mask_zero" if layer.mask_zero else _not_plain(layer)

    @staticmethod
    def forward(layer, x, tap):
        ids = x if x.dtype in (tf.int32, tf.int64) else tf.cast(x, tf.int32)
        return tap(layer(x)), ids

    @staticmethod
    def stats(layer, ids, delta):
        b = tf.shape(ids)[0]
        ids = tf.reshape(tf.cast(ids, tf.int64), [b, -1])
        rows = tf.cast(layer.input_dim, tf.int64)
        flat_delta = tf.reshape(delta, [-1, delta.shape[-1]])
        keys = ids + rows * tf.range(tf.cast(b, tf.int64))[:, None]  # (example, row) pairs
        unique, index = tf.unique(tf.reshape(keys, [-1]))
        summed = tf.math.unsorted_segment_sum(flat_delta, index, tf.size(unique))
        per_row = tf.reduce_sum(tf.square(summed), -1)
        sq = tf.math.unsorted_segment_sum(per_row, unique // rows, b)
        grad = tf.math.unsorted_segment_sum(flat_delta, tf.reshape(ids, [-1]), layer.input_dim)
        return sq, [grad]


RULES = {
    keras.layers.Dense: DenseRule,
    keras.layers.Conv1D: ConvRule,
    keras.layers.Conv2D: ConvRule,
    keras.layers.DepthwiseConv2D: DepthwiseRule,
    keras.layers.BatchNormalization: NormRule,
    compat.SumMomentsBatchNorm: NormRule,
    keras.layers.LayerNormalization: NormRule,
    keras.layers.Embedding: EmbeddingRule,
}
COUNTED = {  # the weights each rule accounts for (all must be trainable)
    DenseRule: ("kernel", "bias"),
    ConvRule: ("kernel", "bias"),
    DepthwiseRule: ("kernel", "bias"),
    NormRule: ("gamma", "beta"),
    EmbeddingRule: ("embeddings",),
}


def plan(model, bn_mode: str) -> tuple[dict, list[str]]:
    """``(rules, without)``: the rule of each layer with trainable weights (by ``id``), and
    the layers (``"name (Class: reason)"``) that stop the exact path (see the module
    docstring)."""
    rules, without = {}, []
    for layer in model.layers:
        kind = type(layer).__name__.replace("SumMomentsBatchNorm", "BatchNormalization")
        if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable:
            if bn_mode == "batch":
                without.append(f"{layer.name} ({kind}: batch statistics)")
                continue
        if isinstance(layer, keras.layers.Masking):
            without.append(f"{layer.name} ({kind}: masks)")
        if not layer.trainable_weights:
            continue
        rule = RULES.get(type(layer))
        if rule is None:
            reason = "no rule"
        elif compat.layer_calls(layer) != 1:
            reason = "shared between nodes"
        else:
            reason = rule.check(layer) or _counted(layer, rule)
        if reason:
            without.append(f"{layer.name} ({kind}: {reason})")
        else:
            rules[id(layer)] = rule
    return rules, without


def _counted(layer, rule) -> str | None:
    weights = [getattr(layer, name, None) for name in COUNTED[rule]]
    counted = {id(w) for w in weights if w is not None}
    return None if counted == {id(w) for w in layer.trainable_weights} else "partly frozen"


def group_sums(fn, count: int, groups: int, dim: int, replica, replicas) -> list:
    """``[Σ v_c, Σ Σ s_c]`` per group (item c in group ``c % groups``; float64, [groups, dim]
    and [groups]) of ``(v_c, s_c) = fn(c)`` over this replica's items c = replica, replica +
    replicas, … < count (in a ``tf.function``). The sums are kept in a TensorArray, one [dim]
    add per item (a [groups, dim] tensor updated by tensor_scatter_nd_add was copied at every
    item: 10× slower on the MLP). Items run one after the other (with TensorFlow's default of
    10 in parallel the small CNN's extra peak RSS was 6–7× higher)."""

    def body(c, vectors, scalars):
        vector, values = fn(c)
        group = c % groups
        vectors = vectors.write(group, vectors.read(group) + tf.cast(vector, tf.float64))
        scalars += tf.one_hot(group, groups, dtype=tf.float64) * tf.reduce_sum(
            tf.cast(values, tf.float64)
        )
        return c + replicas, vectors, scalars

    vectors = tf.TensorArray(tf.float64, size=groups, element_shape=[dim], clear_after_read=False)
    vectors = vectors.unstack(tf.zeros([groups, dim], tf.float64))
    start = tf.convert_to_tensor(replica, tf.int32)
    _, vectors, scalars = tf.while_loop(
        lambda c, *_: c < count,
        body,
        [start, vectors, tf.zeros([groups], tf.float64)],
        parallel_iterations=1,  # one chunk in memory at a time: the operator's batch_size
    )
    return [vectors.stack(), scalars]


class NoExactRule(ValueError):
    """The model has layers (``.layers``) whose per-example gradient norms have no rule here."""

    def __init__(self, layers: list[str]):
        super().__init__("no exact per-example gradient norms for " + ", ".join(layers))
        self.layers = layers


def chunk_group_counts(count: int, chunk: int, groups: int) -> np.ndarray:
    """How many of ``count`` items each of ``groups`` groups holds when the items come in
    chunks of ``chunk`` and chunk ``c`` goes to group ``c % groups``."""
    starts = np.arange(0, count, chunk)
    sizes = np.minimum(chunk, count - starts)
    return np.bincount(np.arange(len(starts)) % groups, weights=sizes, minlength=groups)


class PerExampleNorms:
    """Σ_i g_i and Σ_i ‖g_i‖² per group of examples from one backward pass per chunk.

    The interface of :class:`lrbs_tf.probes.noise.PerExampleGradients`: :meth:`moments` returns
    ``(Σ g_i, Σ ‖g_i‖², n)`` per group (chunk ``c`` of ``chunk`` examples in group
    ``c % GROUPS``, float64, summed over the operator's replicas), which is all the jackknife
    of B_simple needs. ``chunk`` is at most the operator's ``batch_size`` (memory) and
    ⌈n / GROUPS⌉. Raises :class:`NoExactRule` when :func:`plan` names layers without a rule.
    """

    GROUPS = 8
    microbatch = 1
    method = "exact-norms"
    layers_without_rule: list = []

    def __init__(self, op, chunk: int | None = None):
        self.rules, without = plan(op.copy, op.bn_mode)
        self.index = {id(v): i for i, v in enumerate(op.copy.trainable_variables)}
        covered = {
            id(getattr(layer, name))
            for layer in op.copy.layers
            if id(layer) in self.rules
            for name in COUNTED[self.rules[id(layer)]]
            if getattr(layer, name, None) is not None
        }
        if not without and covered != set(self.index):
            without = ["weights outside the model's layers"]
        if without:
            raise NoExactRule(without)
        self.op = op
        self.count = op.num_examples
        self.chunk = max(
            1, min(chunk or op.batch_size, op.batch_size, -(-self.count // self.GROUPS))
        )
        self.mapping = list(zip(op.copy.trainable_variables, op.params)) + list(
            zip(op.copy.non_trainable_variables, op.state)
        )
        # no autograph: its conversion of this module cost 3-6 s per trace on the small CNN
        # (0.3 s without); Keras 3 does not convert layer code either (its train step is
        # do_not_convert), so no layer relies on it
        self._moments = tf.function(self._moments_impl, autograph=False)
        spec_x = tf.TensorSpec([None, *op.x.shape[1:]], op.x.dtype)
        spec_y = tf.TensorSpec([None, *op.y.shape[1:]], op.y.dtype)
        self._norms = tf.function(
            lambda x, y: self._chunk(x, y)[1], input_signature=[spec_x, spec_y], autograph=False
        )

    def _forward(self, x, tape, taps, saved):
        """The model's outputs, each tapped layer run by its rule (taps watched by ``tape``)."""

        def tap(z):
            zero = tf.zeros_like(z)
            tape.watch(zero)
            taps.append(zero)
            return z + zero

        def operation_fn(layer):
            rule = self.rules.get(id(layer))

            def call(*args, **kwargs):
                if rule is None:
                    if "training" in getattr(layer, "_call_context_args", ()):
                        kwargs["training"] = False
                    return layer(*args, **kwargs)
                out, keep = rule.forward(layer, args[0], tap)
                saved.append((rule, layer, keep))
                return out

            return call

        with keras.StatelessScope(state_mapping=self.mapping):
            return compat.run_graph(self.op.copy, x, operation_fn)

    def _chunk(self, x, y):
        """(Σ_i g_i flat, ‖g_i‖² per example) for one chunk: one backward pass to the taps,
        then each layer's statistics (the weight gradients are summed from the same pieces)."""
        op, taps, saved = self.op, [], []
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            outputs = self._forward(x, tape, taps, saved)
            loss = tf.reduce_sum(op.loss(y, outputs))
        deltas = tape.gradient(loss, taps)
        grads = [tf.zeros(shape, op.dtype) for shape in op.shapes]
        sq = tf.zeros([tf.shape(x)[0]], tf.float64)
        for (rule, layer, keep), tap, delta in zip(saved, taps, deltas):
            delta = tf.zeros_like(tap) if delta is None else delta
            norms, summed = rule.stats(layer, keep, delta)
            sq += tf.cast(norms, tf.float64)
            for name, grad in zip(COUNTED[rule], summed):
                if grad is not None:
                    i = self.index[id(getattr(layer, name))]
                    grads[i] = tf.reshape(tf.cast(grad, op.dtype), op.shapes[i])
        return op._flat(grads), sq

    def _moments_impl(self):
        chunk, op = self.chunk, self.op

        def one(c):
            return self._chunk(op.x[c * chunk : (c + 1) * chunk], op.y[c * chunk : (c + 1) * chunk])

        chunks = -(-self.count // chunk)
        return op.replica_sum(
            lambda replica, replicas: group_sums(
                one, chunks, self.GROUPS, op.dim, replica, replicas
            )
        )

    def moments(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(Σ g_i, Σ ‖g_i‖², n)`` per group, float64 (see the class docstring)."""
        total, sq = self._moments()
        return total.numpy(), sq.numpy(), chunk_group_counts(self.count, self.chunk, self.GROUPS)

    def example_norms(self) -> np.ndarray:
        """‖g_i‖² of every example (float64), ``chunk`` examples per call, on one device."""
        op, out = self.op, []
        for start in range(0, self.count, self.chunk):
            end = start + self.chunk
            out.append(self._norms(op.x[start:end], op.y[start:end]).numpy())
        return np.concatenate(out)
