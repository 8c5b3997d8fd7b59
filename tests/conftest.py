"""Shared fixtures: quiet TensorFlow, a seed per test, a clean Keras session and dtype policy."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import pytest  # noqa: E402

collect_ignore_glob = ["drivers/*"]  # scripts the tests start in subprocesses


@pytest.fixture(autouse=True)
def _fresh_keras():
    keras.backend.clear_session(free_memory=False)
    keras.config.set_floatx("float32")
    keras.config.set_dtype_policy("float32")
    keras.utils.set_random_seed(0)
    yield
