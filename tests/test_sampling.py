"""Sampling errors of the probe figures (lrbs_tf.probes.sampling): the intervals value ±
t·SE cover the full training set's value at about their stated rate over repeated draws of the
probe examples. The full-set values are exact: a dense Hessian from GradientTape.jacobian and
per-example gradients, in float64."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from lrbs_tf.probes import sampling
from lrbs_tf.probes.hessian import HessianOperator, batch_layout
from lrbs_tf.probes.prober import Prober
from lrbs_tf.probes.settings import ProbeSettings

N, DRAWS, EXAMPLES = 2000, 20, 200


@pytest.fixture(scope="module")
def problem():
    """A small tanh network fitted for a few epochs on a noisy teacher (not at a minimum, so
    the gradient is not zero), with every figure computed on all N examples."""
    keras.config.set_floatx("float64")
    keras.utils.set_random_seed(4)
    rng = np.random.default_rng(4)
    x = rng.normal(size=(N, 6))
    teacher = rng.normal(size=(6, 3))
    y = np.argmax(x @ teacher + rng.normal(scale=1.5, size=(N, 3)), axis=1)
    inputs = keras.Input((6,), dtype="float64")
    hidden = keras.layers.Dense(8, activation="tanh", dtype="float64")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3, dtype="float64")(hidden))
    model.compile(keras.optimizers.SGD(0.1), keras.losses.SparseCategoricalCrossentropy(True))
    model.fit(x, y, batch_size=50, epochs=2, verbose=0)
    truth = exact_figures(model, x, y)
    keras.config.set_floatx("float32")
    return model, x, y, truth


def exact_figures(model, x, y) -> dict:
    params = model.trainable_variables

    def losses(xb, yb):
        logits = model(xb)
        return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=yb, logits=logits)

    with tf.GradientTape() as outer:
        with tf.GradientTape() as inner:
            loss = tf.reduce_mean(losses(x, y))
        grads = inner.gradient(loss, params)
        flat = tf.concat([tf.reshape(g, [-1]) for g in grads], 0)
    hessian = outer.jacobian(flat, params)
    hessian = np.concatenate([np.reshape(h.numpy(), (flat.shape[0], -1)) for h in hessian], 1)
    eig = np.linalg.eigvalsh((hessian + hessian.T) / 2)
    with tf.GradientTape() as tape:
        per = losses(x, y)
    jac = tape.jacobian(per, params)
    per_example = np.concatenate([np.reshape(j.numpy(), (len(y), -1)) for j in jac], 1)
    mean = per_example.mean(axis=0)
    trace_c = float(np.sum((per_example - mean) ** 2) / (len(y) - 1))
    return {
        "lambda_max": float(eig[-1]),
        "trace": float(eig.sum()),
        "frobenius": float(np.sqrt(np.sum(eig**2))),
        "trace_c_unbiased": trace_c,
        "grad_norm_sq_unbiased": float(mean @ mean),
        "b_simple": trace_c / float(mean @ mean),
    }


def test_groups_never_split_a_batch_and_sum_to_the_whole():
    starts, sizes, group_of = batch_layout(103, 10, "inference", 8)
    assert sizes.sum() == 103 and np.all(np.diff(starts) == sizes[:-1])
    assert list(np.bincount(group_of, weights=sizes)) == [12, 13, 13, 13, 13, 13, 13, 13]
    starts, sizes, group_of = batch_layout(400, 50, "batch", 3)  # mini-batches stay whole
    assert list(sizes) == [50] * 8 and list(group_of) == [0, 0, 0, 1, 1, 1, 2, 2]


def test_each_groups_hessian_vector_product_is_its_own_examples(problem):
    model, x, y, _ = problem
    op = HessianOperator(model, x[:103], y[:103], batch_size=10, dtype="float64", groups=8)
    v = np.random.default_rng(0).normal(size=op.dim)
    per_group = op.group_matvec(v)
    assert np.allclose(op.group_weights @ per_group, op.matvec(v), rtol=1e-12, atol=1e-14)
    alone = HessianOperator(model, x[12:25], y[12:25], batch_size=100, dtype="float64")
    assert np.allclose(per_group[1], alone.matvec(v), rtol=1e-10, atol=1e-13)


def test_intervals_cover_the_full_training_sets_value_at_their_stated_rate(problem):
    """20 draws of 200 of the 2000 examples: each figure's 95 % interval (t with G − 1 = 7
    degrees of freedom) covers the value on all 2000 examples. The measured coverage is in the
    assertion message; a rate under 80 % fails (at 95 % nominal, 20 draws give under 80 % with
    probability 0.3 %). A B_simple reported as a lower bound covers when the value is above it."""
    model, x, y, truth = problem
    settings = ProbeSettings(
        examples=EXAMPLES, noise_examples=EXAMPLES, batch_size=EXAMPLES, dtype="float64",
        finite_difference=False, lanczos_tol=1e-6, trace_matvecs=30, frobenius_samples=10,
    )  # fmt: skip
    covered, bounds = {key: 0 for key in truth}, 0
    for draw in range(DRAWS):
        found = Prober(model, x, y, ProbeSettings(**{**vars(settings), "seed": draw}))()
        for key in truth:
            if key == "b_simple" and found["b_simple_kind"] == "lower bound":
                bounds += 1  # a bound covers when the value is at least the bound
                covered[key] += truth[key] >= found[key]
                continue
            low, high = sampling.interval(found[key], found[f"{key}_stderr"], 8)
            covered[key] += low <= truth[key] <= high
    rates = {key: covered[key] / DRAWS for key in truth}
    message = f"coverage over {DRAWS} draws: {rates} (B_simple a bound in {bounds})"
    print(message)
    assert all(rate >= 0.8 for rate in rates.values()), message


def test_b_simple_is_a_bound_when_the_gradient_is_indistinguishable_from_zero():
    """At the exact minimum of a least-squares fit the mean gradient is 0: B_simple is then a
    finite lower bound with its confidence, never inf."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 3))
    y = x @ np.array([1.0, -2.0, 0.5]) + rng.normal(scale=0.3, size=400)
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(1, use_bias=False)(inputs))
    w, *_ = np.linalg.lstsq(x, y, rcond=None)
    model.layers[-1].kernel.assign(w[:, None])
    squared = lambda target, out: tf.square(out[:, 0] - tf.cast(target, out.dtype))  # noqa: E731
    settings = ProbeSettings(examples=400, noise_examples=400, finite_difference=False)
    found = Prober(model, x.astype(np.float32), y.astype(np.float32), settings, loss=squared)()
    assert found["b_simple_kind"] == "lower bound" and math.isfinite(found["b_simple"])
    assert (
        found["b_simple_confidence"] == 0.95
        and "not significantly above 0" in found["b_simple_note"]
    )
