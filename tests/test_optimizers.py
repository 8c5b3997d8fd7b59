"""The ratio-scaled optimizer applies η = ratio × global batch size exactly, every step."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from lrbs_tf.core.optimizers import (
    BatchSizeUnknown,
    RatioModel,
    RatioScaledOptimizer,
    StepLog,
    as_ratio_model,
)
from lrbs_tf.data.pipeline import EpochData
from tests.helpers import unit_gradient_model

CYCLIC = [128, 640, 128, 640, 129, 3]  # cyclic sizes with a ragged last batch


def applied_lrs(model, sizes, epochs=2):
    """Train on ``sizes`` per epoch; return the η of every step, read back from the kernel."""
    n = sum(sizes)
    data = EpochData(np.ones((n, 1)), np.zeros(n), seed=0)
    kernels = [0.0]
    for epoch in range(epochs):
        model.fit(data.dataset(sizes, epoch), initial_epoch=epoch, epochs=epoch + 1, verbose=0)
        steps, rows, lost = model.step_log.drain()
        assert lost == 0 and len(steps) == len(sizes)
        kernels.append(float(model.layers[-1].kernel.numpy()[0, 0]))
    return -np.diff(kernels), rows


@pytest.mark.parametrize("jit,spe", [(False, 1), (True, 1), (False, 4), (True, 4)])
def test_exact_lr_per_step_cyclic_with_ragged_last_batch(jit, spe):
    ratio = 1e-3
    model = unit_gradient_model(ratio, jit, spe)
    n = sum(CYCLIC)
    data = EpochData(np.ones((n, 1)), np.zeros(n), seed=0)
    kernel = model.layers[-1].kernel
    observed = []
    for epoch in range(2):
        model.fit(data.dataset(CYCLIC, epoch), initial_epoch=epoch, epochs=epoch + 1, verbose=0)
        steps, rows, lost = model.step_log.drain()
        assert lost == 0
        np.testing.assert_array_equal(steps, np.arange(1, len(CYCLIC) + 1) + epoch * len(CYCLIC))
        np.testing.assert_array_equal(rows[:, 1], CYCLIC)  # recorded global batch sizes
        observed.append(rows[:, 2])
    total_expected = 2 * sum(float(np.float32(ratio) * np.float32(s)) for s in CYCLIC)
    # The kernel moved by exactly the sum of the applied learning rates (float32 η, float64 kernel).
    assert -float(kernel.numpy()[0, 0]) == pytest.approx(float(total_expected), rel=1e-12)
    expected = np.float32(ratio) * np.float32(CYCLIC)
    for lrs in observed:
        np.testing.assert_array_equal(lrs, expected)


def test_kernel_steps_equal_ratio_times_batch():
    model = unit_gradient_model(1e-3)
    n = sum(CYCLIC)
    data = EpochData(np.ones((n, 1)), np.zeros(n), seed=0)
    kernel = model.layers[-1].kernel
    deltas = []

    class Probe(keras.callbacks.Callback):
        prev = 0.0

        def on_train_batch_end(self, batch, logs=None):
            k = float(kernel.numpy()[0, 0])
            deltas.append(Probe.prev - k)
            Probe.prev = k

    model.fit(data.dataset(CYCLIC, 0), epochs=1, verbose=0, callbacks=[Probe()])
    expected = [float(np.float32(1e-3) * np.float32(s)) for s in CYCLIC]
    assert deltas == pytest.approx(expected, rel=1e-12, abs=0)


def test_per_step_ratio_from_dataset():
    model = unit_gradient_model(1.0)
    sizes = [4, 8, 4]
    ratios = np.array([1e-3, 2e-3, 5e-4], np.float32)
    ds = tf.data.Dataset.from_tensor_slices((np.array([0, 4, 12]), np.array(sizes))).map(
        lambda s, k: (tf.ones([k, 1], tf.float64), tf.zeros([k], tf.float64))
    )
    ds = tf.data.Dataset.zip((ds, tf.data.Dataset.from_tensor_slices(ratios))).map(
        lambda xy, r: (xy[0], xy[1], r)
    )
    model.fit(ds, epochs=1, verbose=0)
    _, rows, _ = model.step_log.drain()
    np.testing.assert_array_equal(rows[:, 3], ratios)
    np.testing.assert_array_equal(rows[:, 2], ratios * np.float32(sizes))
    assert -float(model.layers[-1].kernel.numpy()[0, 0]) == pytest.approx(
        sum(float(v) for v in ratios * np.float32(sizes)), rel=1e-12
    )


def test_single_trace_of_train_step():
    model = unit_gradient_model(1e-3)
    traces = []
    original = RatioModel.train_step

    def counting(self, data):
        traces.append(1)
        return original(self, data)

    model.train_step = counting.__get__(model)
    n = sum(CYCLIC)
    data = EpochData(np.ones((n, 1)), np.zeros(n), seed=0)
    for epoch in range(3):
        model.fit(data.dataset(CYCLIC, epoch), initial_epoch=epoch, epochs=epoch + 1, verbose=0)
    assert len(traces) == 1


def test_unfed_optimizer_raises_clear_error():
    inputs = keras.Input((1,))
    model = keras.Model(inputs, keras.layers.Dense(1)(inputs))  # not a RatioModel
    model.compile(RatioScaledOptimizer(ratio=1e-3), loss="mse")
    with pytest.raises(ValueError, match="global batch size of every step"):
        model.fit(np.ones((8, 1)), np.ones((8, 1)), epochs=1, verbose=0)
    ratio_model = as_ratio_model(model)
    ratio_model.compile(RatioScaledOptimizer(ratio=1e-3), loss="mse")
    ratio_model.fit(np.ones((8, 1)), np.ones((8, 1)), batch_size=8, epochs=1, verbose=0)
    assert float(ratio_model.optimizer.learning_rate.numpy()) == pytest.approx(8e-3)


def test_learning_rate_needs_a_batch_size_before_the_first_step():
    opt = RatioScaledOptimizer(ratio=1e-3)
    with pytest.raises(BatchSizeUnknown, match="no batch yet"):
        opt.learning_rate = 0.1
    opt.expect_batch_size(50)  # what fit does with arrays
    opt.learning_rate = 0.1
    assert opt.current_ratio() == pytest.approx(0.1 / 50)


def test_schedule_or_ratio_not_both():
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.5)
    with pytest.raises(ValueError, match="not both"):
        RatioScaledOptimizer(keras.optimizers.SGD(schedule), ratio=1e-3)


def test_save_and_load_round_trip(tmp_path):
    inputs = keras.Input((3,))
    model = RatioModel(inputs, keras.layers.Dense(2)(inputs))
    inner = keras.optimizers.SGD(learning_rate=0.0, momentum=0.9)
    model.compile(
        RatioScaledOptimizer(inner, ratio=2.5e-4),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(
        np.random.rand(40, 3), np.random.randint(0, 2, 40), batch_size=16, epochs=1, verbose=0
    )
    path = os.path.join(tmp_path, "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, RatioModel)
    opt = loaded.optimizer
    assert isinstance(opt, RatioScaledOptimizer)
    assert opt.inner_optimizer.momentum == 0.9
    assert float(opt.ratio.numpy()) == pytest.approx(2.5e-4)
    assert int(opt.iterations.numpy()) == 3
    for a, b in zip(model.weights, loaded.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_keras_tensorboard_callback_logs_applied_lr(tmp_path):
    from tensorboard.backend.event_processing import event_accumulator as ea

    model = unit_gradient_model(1e-3)
    n = 96
    data = EpochData(np.ones((n, 1)), np.zeros(n), seed=0)
    tb = keras.callbacks.TensorBoard(str(tmp_path))
    model.fit(data.dataset([32, 64], 0), epochs=1, verbose=0, callbacks=[tb])
    acc = ea.EventAccumulator(str(tmp_path / "train"), size_guidance={ea.TENSORS: 0})
    acc.Reload()
    values = [float(tf.make_ndarray(e.tensor_proto)) for e in acc.Tensors("epoch_learning_rate")]
    assert values == pytest.approx([np.float32(1e-3) * 64])  # η of the last step


def test_single_trace_with_metrics_and_per_step_ratios():
    """The MLP compiled as run.py does, a cyclic plan with per-step η/S: one train_step trace."""
    from lrbs_tf.core.plan import make_plan
    from lrbs_tf.data.pipeline import eval_dataset
    from lrbs_tf.models.registry import build_model
    from lrbs_tf.training.fitting import build_metrics, compile_model, fit_epoch

    n = 300
    x = np.random.rand(n, 28, 28, 1).astype(np.float32)
    y = np.random.randint(0, 10, n).astype(np.int32)
    model = compile_model(build_model("mlp", (28, 28, 1), 10, seed=0, width=16), 1e-4)
    model.step_log = StepLog(64)
    build_metrics(model, eval_dataset(x[:50], y[:50]))
    traces = []
    original = type(model).train_step
    model.train_step = lambda data: (traces.append(1), original(model, data))[1]
    plan = make_plan(0.01, 32, bs_schedule="cyclic:32,100:1", ratio_schedule="tri:1e-4,5e-4:1")
    data = EpochData(x, y, seed=0)
    for epoch in range(3):
        sizes, ratios = plan.epoch(n, epoch)
        fit_epoch(model, data, sizes, epoch, verbose=0, ratios=ratios)
    assert len(traces) == 1
