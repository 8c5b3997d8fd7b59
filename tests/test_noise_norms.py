"""Exact per-example gradient norms (lrbs_tf.probes.noise_norms) against per-example gradients
from tf.vectorized_map; the micro-batch fallback against the exact statistics; and no pfor
while_loop on a Conv2D model."""

import logging

import keras
import numpy as np
import pytest
import tensorflow as tf

from lrbs_tf.probes.hessian import HessianOperator
from lrbs_tf.probes.noise import (
    MicroBatchGradients,
    PerExampleGradients,
    _noise,
    gradient_noise,
    noise_estimator,
)
from lrbs_tf.probes.noise_norms import PerExampleNorms, _kernel_stats, plan

N, K = 24, 3  # examples (8 chunks of 3 with batch_size 10), classes
L = keras.layers


def build(input_shape, layers, dtype="float32"):
    """A functional model with non-trivial BatchNorm / LayerNorm parameters and statistics."""
    keras.config.set_floatx(dtype)
    keras.config.set_dtype_policy(dtype)
    int_input = isinstance(layers[0], L.Embedding)
    inputs = keras.Input(input_shape, dtype="int32" if int_input else dtype)
    h = inputs
    for layer in layers:
        h = layer(h)
    model = keras.Model(inputs, h)
    rng = np.random.default_rng(3)
    for layer in model.layers:
        for name in ("moving_mean", "gamma", "beta"):
            weight = getattr(layer, name, None)
            if weight is not None:
                weight.assign(1.0 + 0.5 * rng.normal(size=weight.shape))
        if isinstance(layer, L.BatchNormalization):
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, size=layer.moving_variance.shape))
    return model


def examples(input_shape, embedding=False, n=N):
    rng = np.random.default_rng(4)
    if embedding:  # 7 ids from a table of 5 rows: repeated indices in every example
        return rng.integers(0, 5, size=(n, *input_shape)), rng.integers(0, K, n)
    return rng.normal(size=(n, *input_shape)), rng.integers(0, K, n)


MODELS = {
    # Dense on 2-D input (Goodfellow), on [2, 3] (ghost: 2·2² ≤ 3·4) and [3, 2] (direct)
    "dense": lambda: (
        (5,),
        [L.Dense(6, activation="tanh"), L.Reshape((2, 3)), L.Dense(4, activation="relu")]
        + [L.Reshape((4, 2)), L.Dense(3, use_bias=False), L.Flatten(), L.Dense(K)],
    ),
    # strides and dilation with padding same and valid (direct forms; ghost in the last)
    "conv2d": lambda: (
        (12, 12, 2),
        [L.Conv2D(4, 3, strides=2, padding="same", activation="relu")]
        + [L.Conv2D(4, 3, dilation_rate=2, padding="same")]
        + [L.Conv2D(3, (3, 2), strides=(1, 2), padding="valid")]
        + [L.Conv2D(3, 2, dilation_rate=(2, 1), activation="tanh"), L.Flatten(), L.Dense(K)],
    ),
    "conv_ghost": lambda: (  # 2T² ≤ p·d in both convolutions
        (4, 4, 8),
        [L.Conv2D(16, 3, padding="same"), L.Conv2D(16, 2), L.GlobalAveragePooling2D(), L.Dense(K)],
    ),
    "conv1d_causal_strided": lambda: (
        (10, 3),
        [L.Conv1D(4, 3, padding="causal", dilation_rate=2), L.Conv1D(4, 2, strides=2)]
        + [L.Flatten(), L.Dense(K)],
    ),
    "depthwise": lambda: (
        (9, 9, 2),
        [L.DepthwiseConv2D(3, depth_multiplier=2, strides=2, padding="same"), L.Flatten()]
        + [L.Dense(K)],
    ),
    "batchnorm_inference": lambda: (
        (9, 9, 2),
        [L.Conv2D(4, 3), L.BatchNormalization(), L.ReLU(), L.Flatten()]
        + [L.Dense(5, use_bias=False), L.BatchNormalization(center=False), L.Dense(K)],
    ),
    "layernorm": lambda: (
        (6, 4),
        [L.Dense(5), L.LayerNormalization(), L.LayerNormalization(axis=[1, 2], center=False)]
        + [L.Flatten(), L.Dense(6), L.LayerNormalization(rms_scaling=True), L.Dense(K)],
    ),
    "embedding": lambda: ((7,), [L.Embedding(5, 3), L.Flatten(), L.Dense(K)]),
}


def vmap_oracle(op):
    """Per-example gradients through tf.vectorized_map, as an (n, dim) float64 array."""
    per = PerExampleGradients(op, chunk=8)
    return np.concatenate([g.astype(np.float64) for g in per.batches()])


@pytest.mark.filterwarnings("ignore:You passed `rms_scaling=True`")
@pytest.mark.parametrize("name", sorted(MODELS))
def test_exact_norms_equal_the_vectorized_map_ones(name):
    input_shape, layers = MODELS[name]()
    model = build(input_shape, layers)
    x, y = examples(input_shape, embedding=name == "embedding")
    op = HessianOperator(model, x, y, batch_size=10)
    fast = PerExampleNorms(op)
    G = vmap_oracle(op)
    np.testing.assert_allclose(fast.example_norms(), np.sum(G**2, axis=1), rtol=1e-5)
    totals, sqs, counts = fast.moments()
    assert counts.tolist() == [3] * 8  # one chunk of 3 per jackknife group
    np.testing.assert_allclose(sqs, [np.sum(G[3 * g : 3 * g + 3] ** 2) for g in range(8)], 1e-5)
    scale = np.abs(G.sum(0)).max()
    np.testing.assert_allclose(totals.sum(0), G.sum(0), rtol=1e-5, atol=1e-6 * scale)
    assert isinstance(noise_estimator(op), PerExampleNorms)  # the default
    stats = gradient_noise(op, per=fast)
    assert stats["noise_method"] == "exact-norms" and stats["noise_layers_without_rule"] == []
    oracle = _noise(G.sum(0), float(np.sum(G**2)), N, 1)
    for key in ("trace_c", "grad_norm_sq"):
        assert stats[key] == pytest.approx(oracle[key], rel=1e-4), key
    assert stats["b_simple_point"] == pytest.approx(oracle["b_simple"], rel=1e-4)
    # the jackknife over the 8 groups, from the oracle's per-example gradients
    rows = [np.delete(G, np.s_[3 * g : 3 * g + 3], axis=0) for g in range(8)]
    jack = np.array([_noise(r.sum(0), float(np.sum(r**2)), N - 3, 1)["b_simple"] for r in rows])
    if np.all(np.isfinite(jack)):
        stderr = np.sqrt(7 / 8 * np.sum((jack - jack.mean()) ** 2))
        assert stats["b_simple_point_stderr"] == pytest.approx(stderr, rel=1e-3)
    else:
        assert np.isnan(stats["b_simple_point_stderr"])


def test_float64_norms_agree_to_float64_precision_and_change_no_variable():
    input_shape, layers = MODELS["batchnorm_inference"]()
    model = build(input_shape, layers, dtype="float64")
    x, y = examples(input_shape)
    before = [w.numpy().copy() for w in model.weights]
    op = HessianOperator(model, x, y, batch_size=10, dtype="float64")
    G = vmap_oracle(op)
    np.testing.assert_allclose(PerExampleNorms(op).example_norms(), np.sum(G**2, 1), rtol=1e-12)
    assert gradient_noise(op)["trace_c"] == pytest.approx(
        _noise(G.sum(0), float(np.sum(G**2)), N, 1)["trace_c"], rel=1e-10
    )
    for a, b in zip(before, model.weights):
        np.testing.assert_array_equal(a, b.numpy())  # BN statistics included


def test_ghost_and_direct_forms_agree_with_numpy():
    rng = np.random.default_rng(5)
    for positions, p, d in ((1, 4, 3), (3, 8, 5), (6, 2, 3)):  # product, ghost, direct
        a, delta = rng.normal(size=(4, positions, p)), rng.normal(size=(4, positions, d))
        sq, summed = _kernel_stats(tf.constant(a), tf.constant(delta))
        per_example = np.einsum("btp,btd->bpd", a, delta)
        np.testing.assert_allclose(sq.numpy(), np.sum(per_example**2, axis=(1, 2)), rtol=1e-12)
        np.testing.assert_allclose(summed.numpy(), per_example.sum(0), rtol=1e-12)


def test_layers_without_a_rule_are_named_and_fall_back_to_microbatches():
    shared = L.Dense(4)
    inputs = keras.Input((4,))
    h = L.EinsumDense("bi,ij->bj", output_shape=4)(shared(shared(inputs)))
    model = keras.Model(inputs, L.Dense(K)(h))
    x, y = examples((4,))
    stats = gradient_noise(HessianOperator(model, x, y, batch_size=10))
    assert stats["noise_method"] == "microbatch(m=2)"
    assert stats["noise_layers_without_rule"] == [
        f"{shared.name} (Dense: shared between nodes)",
        f"{model.layers[2].name} (EinsumDense: no rule)",
    ]
    conv = build((6, 6, 4), [L.Conv2D(4, 3, groups=2), L.BatchNormalization(), L.Flatten()])
    names = [layer.name for layer in conv.layers]
    assert plan(conv, "batch")[1] == [
        f"{names[1]} (Conv2D: grouped)",
        f"{names[2]} (BatchNormalization: batch statistics)",
    ]
    masked = build((7,), [L.Embedding(5, 3, mask_zero=True), L.GlobalAveragePooling1D()])
    assert plan(masked, "inference")[1] == [f"{masked.layers[1].name} (Embedding: mask_zero)"]


def bn_mlp():
    return build((6,), [L.Dense(8, use_bias=False), L.BatchNormalization(), L.ReLU(), L.Dense(K)])


@pytest.mark.parametrize("bn_mode", ["inference", "batch"])
def test_microbatch_gradients_equal_the_vectorized_map_microbatches(bn_mode):
    """Same partition into micro-batches of 4: the same estimate, BatchNorm statistics of each
    micro-batch in batch mode (where the default estimator is this one)."""
    x, y = examples((6,))
    model = bn_mlp()
    op = HessianOperator(model, x, y, batch_size=10, bn_mode=bn_mode)
    ours = gradient_noise(op, microbatch=4)
    oracle = gradient_noise(op, per=PerExampleGradients(op, microbatch=4))
    assert ours["noise_method"] == "microbatch(m=4)"
    for key in ("trace_c", "grad_norm_sq", "b_simple"):
        assert ours[key] == pytest.approx(oracle[key], rel=1e-5), key
    if bn_mode == "batch":
        default = noise_estimator(op)
        assert isinstance(default, MicroBatchGradients) and default.microbatch == 2
        bn = model.layers[2].name
        assert default.layers_without_rule == [f"{bn} (BatchNormalization: batch statistics)"]


def test_microbatch_estimate_of_trace_c_is_unbiased_within_its_standard_error():
    """Statistic: unbiased Tr C from micro-batches of 4 over 6 random orders of 96 examples
    (BatchNorm inference), t = (mean − exact) / (sd / √6) against the exact value from
    per-example gradients (vectorized_map); |t| < 4 (a 1 % two-sided bound for 5 degrees of
    freedom). Each single estimate is also within 4 of its jackknife standard errors."""
    n, m = 96, 4
    model = bn_mlp()
    x, y = examples((6,), n=n)
    G = vmap_oracle(HessianOperator(model, x, y, batch_size=n))
    exact = _noise(G.sum(0), float(np.sum(G**2)), n, 1)["trace_c_unbiased"]
    estimates = []
    for seed in range(6):
        order = np.random.default_rng(seed).permutation(n)
        op = HessianOperator(model, x[order], y[order], batch_size=n)
        totals, sqs, counts = MicroBatchGradients(op, m).moments()
        value = _noise(totals.sum(0), float(sqs.sum()), int(counts.sum()), m)["trace_c_unbiased"]
        jack = [
            _noise(
                totals.sum(0) - totals[g],
                float(sqs.sum() - sqs[g]),
                int(counts.sum() - counts[g]),
                m,
            )["trace_c_unbiased"]
            for g in range(len(counts))
        ]
        stderr = np.sqrt((len(jack) - 1) / len(jack) * np.sum((jack - np.mean(jack)) ** 2))
        assert abs(value - exact) < 4 * stderr, (seed, value, exact, stderr)
        estimates.append(value)
    t = (np.mean(estimates) - exact) / (np.std(estimates, ddof=1) / np.sqrt(len(estimates)))
    assert abs(t) < 4, (estimates, exact)
    assert np.std(estimates) > 1e-3 * exact  # the orders do give different estimates


def test_a_conv2d_probe_logs_no_while_loop():
    """TensorFlow's pfor logs "Conv2DBackpropFilter uses a while_loop" when it falls back to a
    loop over examples; the default noise probe never goes through pfor."""
    model = build((8, 8, 1), [L.Conv2D(3, 3, padding="same"), L.Flatten(), L.Dense(K)])
    x, y = examples((8, 8, 1))
    op = HessianOperator(model, x, y, batch_size=10)
    logger, messages = tf.get_logger(), []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        assert gradient_noise(op)["noise_method"] == "exact-norms"
        assert not [m for m in messages if "while_loop" in m]
        PerExampleGradients(op).moments()  # the capture works: the vmap path does log it
        assert [m for m in messages if "Conv2DBackpropFilter uses a while_loop" in m]
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
