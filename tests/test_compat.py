"""The Keras and TensorFlow internals lrbs_tf relies on (all reached through lrbs_tf.compat)
are still there, and the work-arounds are still needed: this fails when an upgrade changes
them, so that they are looked at again."""

import inspect

import keras
import tensorflow as tf

from lrbs_tf import compat


def test_every_internal_is_there_in_the_installed_keras():
    assert compat.problems() == []


def test_the_installed_versions_are_in_the_range_setup_cfg_states():
    import configparser
    import os

    from packaging.specifiers import SpecifierSet

    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(os.path.dirname(os.path.dirname(__file__)), "setup.cfg"))
    requires = dict(
        line.strip().split(">", 1)
        for line in cfg["options"]["install_requires"].strip().splitlines()
        if line.strip().startswith(("keras", "tensorflow>"))
    )
    assert keras.version() in SpecifierSet(">" + requires["keras"])
    assert tf.__version__ in SpecifierSet(">" + requires["tensorflow"])


def test_keras_multiworker_fix_still_needed_and_applicable():
    """The multi-worker work-around goes once keras-team/keras#20585 is fixed."""
    from keras.src.backend.tensorflow import trainer

    assert hasattr(trainer, "_collective_all_reduce_multi_worker")
    reduce_source = inspect.getsource(trainer.reduce_per_replica)
    assert 'strategy.reduce("MEAN", v, axis=0)' in reduce_source  # the #20585 failure
    build_source = inspect.getsource(trainer.TensorFlowTrainer._maybe_symbolic_build)
    assert 'reduce(\n                        "MEAN"' in build_source  # the #19246 failure


def test_tf_nn_moments_still_gets_second_derivatives_wrong():
    """The reason for SumMomentsBatchNorm: d²/dx² of the batch variance through tf.nn.moments
    differs from the sum-based one (which is right: Var = E[x²] − E[x]²)."""
    x = tf.constant([0.3, -1.2, 2.0, 0.7], tf.float64)

    def hessian(variance):
        with tf.GradientTape() as outer:
            outer.watch(x)
            with tf.GradientTape() as inner:
                inner.watch(x)
                v = variance(x)
            g = inner.gradient(v, x)
        return outer.jacobian(g, x).numpy()

    exact = hessian(lambda t: tf.reduce_mean(t * t) - tf.reduce_mean(t) ** 2)
    moments = hessian(lambda t: tf.nn.moments(t, axes=[0])[1])
    n = 4
    want = 2 / n * (tf.eye(n, dtype=tf.float64).numpy() - 1 / n)
    assert abs(exact - want).max() < 1e-12
    assert abs(moments - want).max() > 0.1
