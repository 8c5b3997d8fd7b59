"""Keras' own learning-rate tools with the ratio-scaled optimizer: ``LearningRateScheduler``,
``ReduceLROnPlateau`` and a ``LearningRateSchedule`` of the inner optimizer set η/S through the
nominal batch size, and every step still applies η = (η/S) × its own S, ragged batch included.

The oracle is the unit-gradient model (tests/helpers.py): each SGD step moves the kernel by
exactly −η, so the kernel's path is the sum of the η applied, independently of the step log."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from lrbs_tf.callbacks import RatioScheduler
from lrbs_tf.core.optimizers import BatchSizeUnknown, RatioModel, RatioScaledOptimizer, StepLog
from tests.helpers import identity_loss, unit_gradient_model

N, S = 80, 32  # steps of 32, 32 and a ragged 16 per epoch
SIZES = [32, 32, 16]


def fit_per_epoch(model, epochs, callbacks, dataset=None):
    """Fit; return per step (epoch, S, η applied from the kernel, η/S logged) and history."""
    x, y = np.ones((N, 1)), np.zeros(N)
    kernel = model.layers[-1].kernel
    moves, before = [], [0.0]

    class Kernel(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            now = float(kernel.numpy()[0, 0])
            moves.append(before[0] - now)
            before[0] = now

    data = dict(x=dataset) if dataset is not None else dict(x=x, y=y, batch_size=S)
    history = model.fit(
        **data, epochs=epochs, verbose=0, shuffle=False, callbacks=[*callbacks, Kernel()]
    )
    steps, rows, lost = model.step_log.drain()
    assert lost == 0 and len(steps) == epochs * len(SIZES)
    return np.array(moves), rows, history.history


def check_exact(moves, rows):
    """η applied at every step = the logged η/S × that step's S (float32), and the kernel
    moved by exactly that η."""
    np.testing.assert_array_equal(rows[:, 1], SIZES * (len(rows) // len(SIZES)))
    expected = rows[:, 3].astype(np.float32) * rows[:, 1].astype(np.float32)
    np.testing.assert_array_equal(rows[:, 2], expected)
    np.testing.assert_allclose(moves, expected.astype(np.float64), rtol=1e-12, atol=0)


def per_epoch_ratio(rows, epochs):
    ratios = rows[:, 3].reshape(epochs, len(SIZES))
    assert (ratios == ratios[:, :1]).all()  # one η/S per epoch
    return ratios[:, 0]


def test_learning_rate_scheduler_sets_the_ratio():
    model = unit_gradient_model(1e-3)
    halve = keras.callbacks.LearningRateScheduler(lambda epoch, lr: lr if epoch == 0 else lr / 2)
    moves, rows, history = fit_per_epoch(model, 3, [halve])
    check_exact(moves, rows)
    ratios = per_epoch_ratio(rows, 3)
    np.testing.assert_allclose(ratios, [1e-3, 5e-4, 2.5e-4], rtol=1e-6)
    # history: η at the nominal S (32, not the ragged 16), η/S and S
    np.testing.assert_allclose(history["learning_rate"], 32 * ratios, rtol=1e-6)
    np.testing.assert_allclose(history["ratio"], ratios, rtol=1e-6)
    assert history["batch_size"] == [32.0] * 3


def test_reduce_lr_on_plateau_sets_the_ratio():
    model = unit_gradient_model(2e-3)
    # the loss falls every epoch: in "max" mode only the first is a best, and η is cut after
    # every later epoch (each epoch's history holds the η it trained with)
    plateau = keras.callbacks.ReduceLROnPlateau("loss", factor=0.5, patience=1, mode="max")
    moves, rows, history = fit_per_epoch(model, 4, [plateau])
    check_exact(moves, rows)
    np.testing.assert_allclose(per_epoch_ratio(rows, 4), [2e-3, 2e-3, 1e-3, 5e-4], rtol=1e-6)
    np.testing.assert_allclose(history["learning_rate"], [0.064, 0.064, 0.032, 0.016], rtol=1e-6)


def test_learning_rate_schedule_of_the_inner_optimizer(tmp_path):
    """η = schedule(step) at the nominal S: η/S = schedule / 32 on every step of an epoch,
    the ragged step's η = η/S × 16; the schedule is saved with the optimizer."""
    keras.config.set_floatx("float64")
    keras.config.set_dtype_policy("float64")
    boundaries, values = [2, 4], [0.064, 0.032, 0.016]
    schedule = keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)
    inputs = keras.Input((1,))
    outputs = keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros")(inputs)
    model = RatioModel(inputs, outputs)
    model.compile(RatioScaledOptimizer(keras.optimizers.SGD(schedule)), loss=identity_loss)
    model.step_log = StepLog(64)
    moves, rows, history = fit_per_epoch(model, 2, [])
    check_exact(moves, rows)
    eta = np.array([float(schedule(step)) for step in range(6)])  # at the step's iteration
    assert list(eta) == pytest.approx([0.064] * 3 + [0.032] * 2 + [0.016])
    np.testing.assert_allclose(rows[:, 3], eta / 32, rtol=1e-6)
    path = os.path.join(tmp_path, "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path, custom_objects={"identity_loss": identity_loss})
    inner = loaded.optimizer.get_config()["inner_optimizer"]["config"]
    assert inner["learning_rate"]["class_name"] == "PiecewiseConstantDecay"
    with pytest.raises(TypeError, match="LearningRateSchedule"):
        loaded.optimizer.learning_rate = 0.1


def test_before_the_first_step_there_is_no_batch_size():
    """A dataset without a static batch size gives no S before the first step: Keras'
    scheduler stops at once with the reason; RatioScheduler, which sets η/S, works."""
    ds = tf.data.Dataset.from_tensor_slices((np.ones((N, 1)), np.zeros(N))).batch(S)
    model = unit_gradient_model(1e-3)
    keep = keras.callbacks.LearningRateScheduler(lambda epoch, lr: lr)
    with pytest.raises(BatchSizeUnknown, match="no batch yet.*RatioScheduler"):
        model.fit(ds, epochs=1, verbose=0, callbacks=[keep])
    model = unit_gradient_model(1e-3)
    tenth = RatioScheduler(lambda epoch, ratio: ratio / 10 if epoch else ratio)
    seen = []  # η as Keras' callbacks read it at the start of each epoch, after the scheduler
    look = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda epoch, logs: (
            seen.append(float(model.optimizer.learning_rate)) if epoch else None
        )
    )
    moves, rows, history = fit_per_epoch(model, 2, [tenth, look], dataset=ds)
    assert seen == pytest.approx([0.0032])  # η/S 1e-4 at the nominal S of 32
    check_exact(moves, rows)
    np.testing.assert_allclose(per_epoch_ratio(rows, 2), [1e-3, 1e-4], rtol=1e-6)
    np.testing.assert_allclose(history["learning_rate"], [0.032, 0.0032], rtol=1e-6)


# -- subclassed models ------------------------------------------------------------------------

USER = os.path.join(os.path.dirname(__file__), "fixtures", "user_models.py")
SHAPE, CLASSES = (8, 8, 1), 3


def shapes(n: int, seed: int):
    """Learnable 8×8 grey images: class c lights up row block c."""
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % CLASSES).astype(np.int64)
    x = rng.uniform(0, 0.25, (n, *SHAPE)).astype(np.float32)
    for c in range(CLASSES):
        x[y == c, 2 * c : 2 * c + 3] += 0.7
    return x, y


def test_a_subclassed_cnn_fits_unbuilt_is_probed_and_saved(tmp_path):
    """The RatioTrainStep mixin on a subclassed CNN that was never built: fit, the Sharpness
    callback, save and load. The probes' copy of it (made from its config) gives the same
    Hessian-vector products as the functional twin with the same weights (a copy cloned layer
    by layer), with BatchNorm in both modes: dropout off, BatchNorm's statistics as sums."""
    from lrbs_tf.callbacks import Sharpness
    from lrbs_tf.probes.hessian import HessianOperator
    from tests.fixtures.user_models import RatioSmallCNN, functional_twin

    x, y = shapes(120, 0)
    model = RatioSmallCNN(CLASSES, 4)
    model.compile(
        RatioScaledOptimizer(ratio=2e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    sharpness = Sharpness((x, y), every=3, examples=40, noise_examples=10)
    history = model.fit(x, y, batch_size=20, epochs=3, verbose=0, callbacks=[sharpness])
    assert history.history["accuracy"][-1] > 0.6
    assert history.history["step_sharpness"][-1] > 0 and history.history["batch_size"][-1] == 20
    twin = functional_twin(SHAPE, CLASSES, 4)
    twin.set_weights(model.get_weights())
    v = np.random.default_rng(1).normal(
        size=sum(int(np.prod(w.shape)) for w in twin.trainable_weights)
    )
    for bn_mode in ("inference", "batch"):
        ours = HessianOperator(model, x[:60], y[:60], batch_size=20, bn_mode=bn_mode)
        theirs = HessianOperator(twin, x[:60], y[:60], batch_size=20, bn_mode=bn_mode)
        np.testing.assert_allclose(ours.matvec(v), theirs.matvec(v), rtol=1e-4, atol=1e-6)
    path = os.path.join(tmp_path, "cnn.keras")
    model.save(path)
    loaded = keras.models.load_model(path, custom_objects={"RatioSmallCNN": RatioSmallCNN})
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    assert float(loaded.optimizer.ratio.numpy()) == pytest.approx(2e-3)


def test_a_subclassed_model_without_the_mixin_is_refused_in_one_line(tmp_path):
    """run.py checks a builder's model before anything is written; a subclassed one that does
    not inherit RatioTrainStep is refused naming the class to write. (A subclassed CNN with it
    trains, is probed and reloaded through run.py and tools/probe.py in tests/test_streams.py.)"""
    from lrbs_tf.models.registry import checked
    from lrbs_tf.models.sources import ModelError
    from tests.fixtures.user_models import RatioSmallCNN, SmallCNN

    with pytest.raises(ModelError, match=r"class RatioSmallCNN\(RatioTrainStep, SmallCNN\)") as e:
        checked(SmallCNN(CLASSES), "file.py:plain", SHAPE, CLASSES)
    assert "\n" not in str(e.value)
    model = checked(RatioSmallCNN(CLASSES), "file.py:cnn", SHAPE, CLASSES)  # built by the check
    assert model.built and model.count_params() == 4 * 9 + 4 * 4 + (4 * 16 + 1) * CLASSES
    with pytest.raises(ModelError, match="outputs shape \\(3,\\), the data has 4 classes"):
        checked(RatioSmallCNN(CLASSES), "file.py:cnn", SHAPE, 4)
