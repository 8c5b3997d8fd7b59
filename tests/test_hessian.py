"""HVPs and probes against dense Hessians from GradientTape.jacobian in float64."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from lrbs_tf.models.registry import build_model
from lrbs_tf.probes import spectral
from lrbs_tf.probes.finite_difference import finite_difference_frobenius
from lrbs_tf.probes.hessian import HessianOperator
from lrbs_tf.probes.noise import compare_with_hessian, gradient_noise
from lrbs_tf.probes.prober import Prober
from lrbs_tf.probes.settings import ProbeSettings

N, D, K = 23, 5, 3  # examples (uneven last batch with batch_size 7), features, classes


def small_mlp(dropout=0.0):
    model = build_model("mlp", (D,), K, seed=1, width=4, depth=2, dropout=dropout)
    rng = np.random.default_rng(0)
    model(rng.normal(size=(8, D)).astype(np.float32), training=True)
    # Non-trivial BN statistics, as after training.
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.moving_mean.assign(rng.normal(size=layer.moving_mean.shape) * 0.3)
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, size=layer.moving_variance.shape))
    return model


def data():
    rng = np.random.default_rng(1)
    return rng.normal(size=(N, D)).astype(np.float32), rng.integers(0, K, N)


_DENSE = {}


def dense_hessian(op, batches):
    """∑_b (n_b/N) ∇²L_b via GradientTape.jacobian on a flat float64 parameter vector.

    Cached per (BN mode, batching): small_mlp() and data() are deterministic.
    """
    key = (op.bn_mode, batches)
    if key not in _DENSE:
        _DENSE[key] = _dense_hessian(op, batches)
    return _DENSE[key]


def _dense_hessian(op, batches):
    flat = tf.Variable(op.flatten_numpy([p.numpy() for p in op.params]))
    total = 0
    for start in range(0, N, batches):
        x, y = op.x[start : start + batches], op.y[start : start + batches]
        with tf.GradientTape() as outer:
            with tf.GradientTape() as inner:
                loss = op._batch_loss(op._split(flat), x, y)
            g = inner.gradient(loss, flat)
        H = outer.jacobian(g, flat).numpy()
        total = total + H * len(y) / N
    return total


@pytest.mark.parametrize("bn_mode", ["inference", "batch"])
@pytest.mark.parametrize("method", ["rr", "fr"])
def test_hvp_matches_dense_hessian(bn_mode, method):
    x, y = data()
    op = HessianOperator(
        small_mlp(), x, y, batch_size=7, bn_mode=bn_mode, dtype="float64", method=method
    )
    H = dense_hessian(op, 7)
    assert np.abs(H - H.T).max() < 1e-12
    rng = np.random.default_rng(2)
    for _ in range(3):
        v = rng.normal(size=op.dim)
        hv = op.matvec(v)
        assert np.linalg.norm(hv - H @ v) / np.linalg.norm(H @ v) < 1e-10
    assert op.trace_counts()["hvp"] == 1


def test_batch_weighted_mean_with_uneven_last_batch():
    """In inference mode the operator is the Hessian of the mean over all N examples."""
    x, y = data()
    full = HessianOperator(small_mlp(), x, y, batch_size=N, dtype="float64")
    split = HessianOperator(small_mlp(), x, y, batch_size=7, dtype="float64")  # 7+7+7+2
    v = np.random.default_rng(3).normal(size=full.dim)
    np.testing.assert_allclose(split.matvec(v), full.matvec(v), rtol=1e-11, atol=1e-14)
    np.testing.assert_allclose(split.matvec(v), dense_hessian(full, N) @ v, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("bn_mode", ["inference", "batch"])
def test_estimators_on_the_model_hessian(bn_mode):
    x, y = data()
    dim = HessianOperator(small_mlp(), x, y, batch_size=7).dim
    settings = ProbeSettings(
        examples=N,
        noise_examples=N,
        batch_size=7,
        bn_mode=bn_mode,
        dtype="float64",
        top_k=2,
        lanczos_tol=1e-10,
        lanczos_max_steps=dim,
        trace_matvecs=3 * dim,
        frobenius_samples=300,
        fd_eps=1e-5,
    )
    prober = Prober(small_mlp(), x, y, settings)  # the one probe path (all N examples)
    op = prober.op
    H = dense_hessian(op, 7)
    eigs = np.linalg.eigvalsh(H)
    result = dict(prober(), settings=prober.describe())
    assert result["lambda_max"] == pytest.approx(eigs[-1], rel=1e-8)
    assert result["top_eigenvalues"][1] == pytest.approx(eigs[-2], rel=1e-6)
    assert all(result["lanczos_converged"])
    # Hutch++ with a sketch as large as the space is exact.
    assert result["trace"] == pytest.approx(np.trace(H), rel=1e-8)
    frob = np.linalg.norm(H)
    assert abs(result["frobenius"] - frob) < 4 * result["frobenius_stderr"]
    # The paper's finite-difference estimator uses Gaussian v: same expectation, more variance.
    assert abs(result["frobenius_fd"] - frob) < 4 * result["frobenius_fd_stderr"]
    assert result["settings"]["bn_mode"] == bn_mode and result["settings"]["num_examples"] == N


@pytest.mark.parametrize("bn_mode", ["inference", "batch"])
def test_hvp_matches_finite_differences_of_the_gradient(bn_mode):
    """An oracle outside double backprop: (∇L(θ+εv) − ∇L(θ−εv)) / 2ε."""
    x, y = data()
    op = HessianOperator(small_mlp(), x, y, batch_size=7, bn_mode=bn_mode, dtype="float64")
    v = np.random.default_rng(7).normal(size=op.dim)
    eps = 1e-5
    fd = (op.gradient(eps * v) - op.gradient(-eps * v)) / (2 * eps)
    hv = op.matvec(v)
    assert np.linalg.norm(fd - hv) / np.linalg.norm(hv) < 1e-7


def test_upstream_tf_nn_moments_second_derivative_is_wrong():
    """Why the probe copy uses synchronized BatchNorm statistics (see lrbs_tf.hessian).

    tf.nn.moments computes the variance around stop_gradient(mean): right first derivatives,
    wrong second ones (tensorflow/tensorflow#19609 notes only the first). If this test starts
    failing, TensorFlow changed and the workaround may be dropped.
    """
    rng = np.random.default_rng(8)
    x0 = tf.constant(rng.normal(size=(6, 2)))
    w = tf.Variable(rng.normal(size=(2, 2)))

    def loss(moments):
        h = tf.matmul(x0, w)
        mean, var = moments(h)
        return tf.reduce_sum(((h - mean) / tf.sqrt(var + 1e-3))[:, 0] ** 3)

    def by_sums(h):
        mean = tf.reduce_mean(h, 0)
        return mean, tf.reduce_mean(h * h, 0) - mean * mean

    def hessian(moments):
        with tf.GradientTape() as outer:
            with tf.GradientTape() as inner:
                value = loss(moments)
            g = inner.gradient(value, w)
        return outer.jacobian(g, w).numpy()

    upstream = hessian(lambda h: tf.nn.moments(h, [0]))
    ours = hessian(by_sums)
    assert np.abs(upstream - ours).max() > 1e-3 * np.abs(ours).max()


def test_finite_difference_hv_is_first_order_accurate():
    x, y = data()
    op = HessianOperator(small_mlp(), x, y, batch_size=7, dtype="float64")
    v = np.random.default_rng(4).normal(size=op.dim)
    exact = op.matvec(v)
    errors = []
    for eps in (1e-2, 1e-3):
        fd = (op.gradient(eps * v) - op.gradient()) / eps
        errors.append(np.linalg.norm(fd - exact) / np.linalg.norm(exact))
    assert errors[1] < errors[0] / 5 and errors[1] < 1e-2
    assert finite_difference_frobenius(op, num=3).matvecs == 7  # g0, then ε and 2ε per draw


def test_probe_changes_no_model_variable():
    x, y = data()
    model = small_mlp(dropout=0.5)
    before = [w.numpy().copy() for w in model.weights]
    for bn_mode in ("inference", "batch"):
        op = HessianOperator(model, x, y, batch_size=7, bn_mode=bn_mode)
        settings = ProbeSettings(
            examples=N,
            noise_examples=N,
            batch_size=7,
            bn_mode=bn_mode,
            trace_matvecs=9,
            frobenius_samples=3,
            lanczos_max_steps=10,
        )
        Prober(model, x, y, settings, step_batch=7)()
        gradient_noise(op)
    for a, b in zip(before, model.weights):
        np.testing.assert_array_equal(a, b.numpy())  # bit-identical, BN statistics included


def test_dropout_is_off_in_the_operator():
    x, y = data()
    op = HessianOperator(small_mlp(dropout=0.5), x, y, batch_size=7, bn_mode="batch")
    v = np.random.default_rng(5).normal(size=op.dim)
    np.testing.assert_array_equal(op.matvec(v), op.matvec(v))


def test_one_trace_per_operator_during_lanczos():
    x, y = data()
    op = HessianOperator(small_mlp(), x, y, batch_size=7)
    spectral.top_eigenvalues(op.matvec, op.dim, k=1, max_steps=15, tol=1e-12)
    op.gradient()
    op.gradient(np.ones(op.dim) * 1e-3)
    op.group_matvec(np.ones(op.dim))
    op.group_matvec(np.zeros(op.dim))
    assert op.trace_counts() == {"hvp": 1, "gradient": 1, "group_hvp": 1} and op.matvecs == 17


def test_refresh_follows_the_model():
    x, y = data()
    model = small_mlp()
    op = HessianOperator(model, x, y, batch_size=7, dtype="float64")
    v = np.ones(op.dim)
    first = op.matvec(v)
    model.layers[-1].kernel.assign(model.layers[-1].kernel * 2.0)
    np.testing.assert_array_equal(op.matvec(v), first)  # a snapshot until refreshed
    op.refresh()
    assert not np.allclose(op.matvec(v), first)


def test_b_simple_matches_closed_form_on_linear_regression():
    """Squared loss ½(wᵀx − y)²: per-example gradients are x_i (wᵀx_i − y_i) in closed form."""
    rng = np.random.default_rng(6)
    n, d = 64, 4
    X = rng.normal(size=(n, d))
    Y = X @ rng.normal(size=d) + rng.normal(size=n) * 0.5
    inputs = keras.Input((d,), dtype="float64")
    keras.config.set_dtype_policy("float64")
    model = keras.Model(inputs, keras.layers.Dense(1, use_bias=False)(inputs))
    w = rng.normal(size=(d, 1))
    model.layers[-1].kernel.assign(w)
    loss = lambda yt, out: 0.5 * (out[:, 0] - yt) ** 2  # noqa: E731
    op = HessianOperator(model, X, Y, batch_size=10, dtype="float64", loss=loss)
    stats = gradient_noise(op, chunk=16)
    G = X * (X @ w[:, 0] - Y)[:, None]
    gbar = G.mean(axis=0)
    trace_c = np.mean(np.sum((G - gbar) ** 2, axis=1))
    assert stats["trace_c"] == pytest.approx(trace_c, rel=1e-10)
    assert stats["grad_norm_sq"] == pytest.approx(gbar @ gbar, rel=1e-10)
    tc_u = trace_c * n / (n - 1)
    assert stats["b_simple"] == pytest.approx(tc_u / (gbar @ gbar - tc_u / n), rel=1e-10)
    # Micro-batches of 4: Tr C from their covariance times 4 estimates the same Tr C.
    micro = gradient_noise(op, microbatch=4)
    assert micro["trace_c"] == pytest.approx(trace_c, rel=0.6)
    # And the Hessian is XᵀX/n exactly.
    H = X.T @ X / n
    cmp = compare_with_hessian(op, k=2, max_examples=n, trace_h=None)
    assert cmp["trace_h"] == pytest.approx(np.trace(H), rel=1e-8)
    C = (G - gbar).T @ (G - gbar) / n
    assert cmp["trace_c"] == pytest.approx(np.trace(C), rel=1e-8)
    assert cmp["trace_c_over_trace_h"] == pytest.approx(np.trace(C) / np.trace(H), rel=1e-8)


def _smooth(kind):
    """Small float64 models with smooth activations: a Dense net, a Conv2D net and a
    LayerNorm net (inputs, layers)."""
    layers = keras.layers
    if kind == "dense":
        return (6,), [layers.Dense(5, activation="tanh"), layers.Dense(K)]
    if kind == "conv2d":
        return (5, 5, 2), [
            layers.Conv2D(3, 3, strides=2, padding="same", activation="tanh"),
            layers.Flatten(),
            layers.Dense(K),
        ]
    return (6,), [layers.Dense(5), layers.LayerNormalization(), layers.Activation("tanh"),
                  layers.Dense(K)]  # fmt: skip


@pytest.mark.parametrize("kind", ["dense", "conv2d", "layernorm"])
def test_both_frobenius_norms_agree_with_a_dense_hessian_within_their_errors(kind):
    """Hutchinson's ‖H‖_F on exact HVPs and the paper's finite differences, each with its
    stated error (the finite difference's includes its step error, FD(ε) against FD(2ε)), on
    smooth models in float64."""
    shape, layers = _smooth(kind)
    keras.config.set_floatx("float64")
    keras.utils.set_random_seed(3)
    inputs = keras.Input(shape)
    out = inputs
    for layer in layers:
        out = layer(out)
    model = keras.Model(inputs, out)
    rng = np.random.default_rng(6)
    x = rng.normal(size=(N, *shape))
    y = rng.integers(0, K, N)
    settings = ProbeSettings(
        examples=N, noise_examples=N, batch_size=N, dtype="float64", frobenius_samples=200,
        fd_eps=1e-4, lanczos_tol=1e-8,
    )  # fmt: skip
    found = Prober(model, x, y, settings)()
    op = HessianOperator(model, x, y, batch_size=N, dtype="float64")
    flat = tf.Variable(op.flatten_numpy([p.numpy() for p in op.params]))
    with tf.GradientTape() as outer:
        with tf.GradientTape() as inner:
            loss = op._batch_loss(op._split(flat), op.x, op.y)
        g = inner.gradient(loss, flat)
    exact = float(np.linalg.norm(outer.jacobian(g, flat).numpy()))
    keras.config.set_floatx("float32")
    for key in ("frobenius", "frobenius_fd"):
        assert abs(found[key] - exact) < 3 * found[f"{key}_stderr"], (key, found[key], exact)
    assert found["frobenius_fd_step_error"] < 0.05 * exact  # smooth: the step is not the error
