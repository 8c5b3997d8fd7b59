"""Width and step sharpness against dense Hessians; the Sharpness callback in a plain fit."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from lrbs_tf.callbacks import Sharpness
from lrbs_tf.models.registry import build_model
from lrbs_tf.probes.prober import Prober
from lrbs_tf.probes.settings import ProbeSettings
from lrbs_tf.training.tensorboard import read_scalars
from tests.helpers import needs_fmnist

N, D, K, S = 24, 5, 3, 6  # 24 probe examples = 4 batches of S = 6


def tiny(bn: bool):
    keras.utils.set_random_seed(3)
    inputs = keras.Input((D,))
    h = keras.layers.Dense(4, use_bias=not bn)(inputs)
    if bn:
        h = keras.layers.BatchNormalization(momentum=0.9)(h)
    h = keras.layers.ReLU()(keras.layers.Dense(4)(keras.layers.ReLU()(h)))
    model = keras.Model(inputs, keras.layers.Dense(K)(h))
    rng = np.random.default_rng(0)
    model(rng.normal(size=(8, D)).astype(np.float32), training=True)
    for layer in model.layers:  # moving statistics away from the batch statistics
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.moving_mean.assign(rng.normal(size=layer.moving_mean.shape) * 0.5)
            layer.moving_variance.assign(rng.uniform(0.3, 3.0, size=layer.moving_variance.shape))
    return model


def data():
    rng = np.random.default_rng(1)
    return rng.normal(size=(N, D)).astype(np.float32), rng.integers(0, K, N).astype(np.int32)


def settings(**kw):
    base = dict(
        examples=N,
        noise_examples=12,
        batch_size=8,
        dtype="float64",
        trace_matvecs=9,
        frobenius_samples=3,
        finite_difference=False,
        lanczos_tol=1e-9,
        lanczos_max_steps=200,
    )
    return ProbeSettings(**dict(base, **kw))


def dense_step_hessian(model, x, y):
    """Mean over the batches of S of the Hessian of the loss with batch statistics, written
    out by hand (Dense → BatchNorm with the batch's mean and biased variance → ReLU → Dense →
    ReLU → Dense) in float64, from GradientTape.jacobian on a flat parameter vector."""
    dense1, bn, _, dense2, _, dense3 = [layer for layer in model.layers[1:]]
    values = [v.numpy().astype(np.float64) for v in model.trainable_variables]
    shapes, sizes = [v.shape for v in values], [v.size for v in values]
    flat = tf.Variable(np.concatenate([v.ravel() for v in values]))
    eps = bn.epsilon

    def batch_loss(params, xb, yb):
        w1, gamma, beta, w2, b2, w3, b3 = params
        h = xb @ w1
        mean = tf.reduce_mean(h, axis=0)
        var = tf.reduce_mean((h - mean) ** 2, axis=0)
        h = tf.nn.relu(gamma * (h - mean) / tf.sqrt(var + eps) + beta)
        h = tf.nn.relu(h @ w2 + b2)
        logits = h @ w3 + b3
        return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(yb, logits))

    total = 0
    for start in range(0, N, S):
        xb, yb = tf.constant(x[start : start + S], tf.float64), tf.constant(y[start : start + S])
        with tf.GradientTape() as outer:
            with tf.GradientTape() as inner:
                params = [tf.reshape(t, s) for t, s in zip(tf.split(flat, sizes), shapes)]
                loss = batch_loss(params, xb, yb)
            g = inner.gradient(loss, flat)
        total = total + outer.jacobian(g, flat).numpy() / (N // S)
    return total


def test_without_batchnorm_step_and_width_sharpness_are_equal():
    x, y = data()
    measured = Prober(tiny(bn=False), x, y, settings(), step_batch=S)(lr=0.1)
    assert measured["step_sharpness"] == pytest.approx(measured["width_sharpness"], rel=1e-8)
    assert measured["stability_2_over_lr"] == pytest.approx(20.0)
    assert measured["lr_times_step_sharpness"] == pytest.approx(0.1 * measured["step_sharpness"])


def test_with_batchnorm_step_sharpness_is_that_of_the_batch_statistics_loss():
    x, y = data()
    model = tiny(bn=True)
    prober = Prober(model, x, y, settings(), step_batch=S)
    # The probe subset is a seeded permutation: the dense Hessian uses the same examples.
    xs, ys = x[prober.step_indices], y[prober.step_indices]
    dense = np.linalg.eigvalsh(dense_step_hessian(model, xs, ys))[-1]
    measured = prober()
    assert measured["step_sharpness"] == pytest.approx(dense, rel=1e-7)
    # ... which is not the inference-mode (width) sharpness of the same model.
    assert abs(measured["width_sharpness"] / measured["step_sharpness"] - 1) > 0.05


def compiled_mlp():
    """A width-16 MLP compiled with plain SGD(0.05), and 400 random 6×6 examples of 10 classes."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 6, 6, 1)).astype(np.float32)
    y = rng.integers(0, 10, 400).astype(np.int32)
    model = build_model("mlp", (6, 6, 1), 10, seed=1, width=16)
    model.compile(
        keras.optimizers.SGD(0.05),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model, x, y


def test_callback_in_a_plain_fit_writes_one_point_per_probe_and_traces_once(tmp_path):
    model, x, y = compiled_mlp()
    probe = Sharpness(
        (x, y),
        every=1,
        batch_size=50,
        examples=200,
        noise_examples=100,
        log_dir=str(tmp_path / "probe"),
        max_overhead=None,  # every epoch, whatever it costs
    )
    history = model.fit(x, y, batch_size=50, epochs=3, verbose=0, callbacks=[probe])
    for key in (
        "width_sharpness",
        "step_sharpness",
        "stability_2_over_lr",
        "trace",
        "trace_stderr",
        "b_simple",
    ):
        assert len(history.history[key]) == 3 and np.all(np.isfinite(history.history[key]))
    for record in probe.history:  # an estimate has its error; a lower bound has none
        assert np.isfinite(record["b_simple_stderr"]) == (record["b_simple_kind"] == "estimate")
    assert history.history["stability_2_over_lr"] == pytest.approx([40.0] * 3)
    assert [h["epoch"] for h in probe.history] == [1, 2, 3]
    scalars = read_scalars(str(tmp_path / "probe"))
    # 2/η in a run of its own (its own colour); steps at Keras' epoch index, as its callback
    scalars |= read_scalars(str(tmp_path / "probe_2_over_lr"))
    for tag in (
        "probe/width_sharpness",
        "probe/step_sharpness",
        "probe/stability_2_over_lr",
        "probe/b_simple",
        "probe/seconds",
    ):
        assert [step for step, _ in scalars[tag]] == [0, 1, 2], tag
    assert scalars["probe/step_sharpness"][-1][1] == pytest.approx(
        history.history["step_sharpness"][-1], rel=1e-6
    )
    traces = probe.prober.trace_counts()  # every function traced once (or never used)
    assert traces["width_hvp"] == traces["step_hvp"] == traces["noise_moments"] == 1
    assert max(traces.values()) == 1


@pytest.mark.parametrize("source", ["arrays", "tf.data"])
def test_callback_reads_the_nominal_batch_not_the_ragged_last_one(source):
    """1293 = 10·128 + 13 examples at η/S = 0.2/128: S = 128 and 2/η = 10, although the
    epoch's last step took 13 examples at η = 0.0203."""
    from lrbs_tf.core.optimizers import RatioScaledOptimizer, as_ratio_model

    rng = np.random.default_rng(0)
    x = rng.normal(size=(1293, 8)).astype(np.float32)
    y = rng.integers(0, 3, 1293).astype(np.int32)
    inputs = keras.Input((8,))
    model = as_ratio_model(keras.Model(inputs, keras.layers.Dense(3)(inputs)))
    model.compile(
        RatioScaledOptimizer(keras.optimizers.SGD(0.0), ratio=0.2 / 128),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    probe = Sharpness((x, y), examples=256, noise_examples=64)
    data = (
        (x, y) if source == "arrays" else (tf.data.Dataset.from_tensor_slices((x, y)).batch(128),)
    )
    kwargs = {"batch_size": 128} if source == "arrays" else {}
    history = model.fit(*data, epochs=1, verbose=0, callbacks=[probe], **kwargs)
    assert float(model.optimizer.batch_size.numpy()) == 13  # the ragged last step
    assert history.history["stability_2_over_lr"] == pytest.approx([10.0])
    assert probe.history[0]["step_batch_size"] == 128


@pytest.mark.filterwarnings("ignore")
def test_adaptive_growth_keeps_the_ratio_and_its_limits(tmp_path):
    from tests.helpers import have_fashion_mnist

    if not have_fashion_mnist():
        pytest.skip("Fashion-MNIST not installed (make data)")
    from lrbs_tf.training.config import RunConfig
    from lrbs_tf.training.run import train

    config = RunConfig(
        lr=0.02,
        batch_size=16,
        bs_schedule="adaptive:60",
        epochs=4,
        train_size=1200,
        validation_size=500,
        width=32,
        logdir=str(tmp_path),
        jit_compile="off",
    )
    results = train(config.validate())
    decisions = [e["growth"] for e in results["epochs"] if e.get("growth")]
    assert len(decisions) == 3  # after every epoch but the last
    for d in decisions:
        assert d["batch_size"] <= d["next_batch_size"] <= min(60, 2 * d["batch_size"], 120)
        assert (
            d["next_batch_size"] <= d["b_simple_smoothed"]
            or d["bound_by"] == "unchanged"
            or d["next_batch_size"] == d["batch_size"]
        )
    steps = read_scalars(f"{config.run_dir}/tb/train")
    ratios = np.array([v for _, v in steps["step/ratio"]])
    sizes = np.array([v for _, v in steps["step/batch_size"]])
    lrs = np.array([v for _, v in steps["step/lr"]])
    np.testing.assert_allclose(ratios, np.float32(0.02 / 16), rtol=1e-6)  # η/S every step
    np.testing.assert_allclose(lrs, np.float32(0.02 / 16) * sizes.astype(np.float32), rtol=1e-6)
    full = [int(s) for s in sizes if s > 0]
    chosen = [16] + [d["next_batch_size"] for d in decisions]
    for epoch, size in enumerate(chosen):  # each epoch's batches are its chosen S (+ remainder)
        steps_in_epoch = results["epochs"][epoch]["steps"]
        start = sum(e["steps"] for e in results["epochs"][:epoch])
        assert full[start] == size and steps_in_epoch == -(-1200 // size)
    assert max(full) <= 60


@needs_fmnist
@pytest.mark.filterwarnings("ignore")
def test_stability_check_end_to_end_on_a_small_subset(tmp_path):
    """The advisor's verdicts against what SGD did, on 600 examples: η·λ_step of each candidate
    is η times the step sharpness probed at θ0, a step of η = 20 blows up, and the table, the
    counts and the figure agree with each other."""
    from lrbs_tf.figures.stability import Check, run
    from lrbs_tf.theory.advice import EDGE_AT, UNSTABLE_AT

    check = Check(
        train_size=600,
        width=16,
        warmup=(0.05, 100, 1),
        lrs=(0.05, 20.0),
        batches=(),
        epochs=1,
        probe_examples=200,
    )
    report = run(check, str(tmp_path))
    rows = report["rows"]
    assert [(r["lr"], r["batch_size"]) for r in rows] == [(0.05, 100), (20.0, 100)]
    for r in rows:
        assert r["lr_times_step_sharpness"] == pytest.approx(r["lr"] * r["step_sharpness"])
        assert r["verdict"] == (
            "stable" if r["lr_times_step_sharpness"] < UNSTABLE_AT else "unstable"
        )
        assert r["edge_of_stability"] == (EDGE_AT <= r["lr_times_step_sharpness"] < UNSTABLE_AT)
    assert rows[1]["verdict"] == "unstable" and rows[1]["outcome"] in ("unstable", "diverged")
    counts = report["confusion"]
    assert sum(sum(c.values()) for c in counts.values()) == 2
    assert report["advisor_agreement"] == [sum(r["agrees"] for r in rows), 2]
    assert (tmp_path / "stability.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    "probe_seconds,cost,train_seconds,expected",
    [
        (0.0, None, 0.0, True),  # the first probe prices the rest
        (1.0, 1.0, 20.0, True),  # 2 s of probes within 0.1 × 20 s
        (1.0, 1.5, 20.0, False),
        (3.0, 1.0, 40.0, True),
    ],
)
def test_the_callback_probes_while_the_overhead_allows(
    probe_seconds, cost, train_seconds, expected
):
    from lrbs_tf.probes.callbacks import affordable

    assert affordable(probe_seconds, cost, train_seconds, 0.1) == expected


def test_the_callback_sizes_its_probes_and_their_spacing_from_the_first():
    from lrbs_tf.probes.callbacks import epochs_between, examples_within

    assert examples_within(0.01, 5.0, 64, 2000) == 500  # 5 s at 10 ms per example
    assert examples_within(0.01, 0.1, 64, 2000) == 64  # never fewer than the first probe's
    assert examples_within(0.001, 5.0, 64, 2000) == 2000  # never more than asked
    assert epochs_between(2.0, 10.0, 0.1, 1) == 2  # a 2 s probe per 1 s of budget an epoch
    assert epochs_between(2.0, 10.0, 0.1, 3) == 3  # a multiple of every
    assert epochs_between(0.5, 10.0, 0.1, 1) == 1


@pytest.mark.parametrize(
    "max_overhead,epochs,examples", [(1e-9, [1], [64]), (1e9, [1, 2, 3], [64, 100, 100])]
)
def test_the_callback_keeps_its_overhead(max_overhead, epochs, examples):
    """The first probe is small; a tiny overhead allows no other, an unlimited one a probe per
    epoch on every example asked for (the first probe priced them)."""
    model, x, y = compiled_mlp()
    settings = ProbeSettings(
        examples=100, noise_examples=50, batch_size=100, trace_matvecs=9, frobenius_samples=4,
        lanczos_max_steps=20, finite_difference=False,
    )  # fmt: skip
    probe = Sharpness((x, y), batch_size=50, settings=settings, max_overhead=max_overhead)
    history = model.fit(x, y, batch_size=50, epochs=3, verbose=0, callbacks=[probe])
    assert [h["epoch"] for h in probe.history] == epochs
    assert [h["examples"] for h in probe.history] == examples
    assert len(history.history["width_sharpness"]) == len(epochs)
    assert probe.train_seconds > 0 and probe.probe_seconds > 0
