"""Shared fixtures: quiet TensorFlow, a seed per test, a clean Keras session and dtype policy."""
import os
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import pytest  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FMNIST_DIR = "/usr/share/datasets/fashion-mnist"


@pytest.fixture(autouse=True)
def _fresh_keras():
    keras.backend.clear_session(free_memory=False)
    keras.config.set_floatx("float32")
    keras.config.set_dtype_policy("float32")
    keras.utils.set_random_seed(0)
    yield


def have_fashion_mnist() -> bool:
    return os.path.exists(os.path.join(FMNIST_DIR, "train-images-idx3-ubyte.gz")) or bool(
        os.environ.get("LRBS_DATA_DIR"))


needs_fmnist = pytest.mark.skipif(not have_fashion_mnist(),
                                  reason="Fashion-MNIST not installed (make data)")


def run_script(script, *args, timeout=600, cwd=None, env=None):
    """Run a CLI script of the repo in a subprocess; returns CompletedProcess (text)."""
    full_env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **(env or {}))
    return subprocess.run([sys.executable, os.path.join(ROOT, script), *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, cwd=cwd or ROOT,
                          env=full_env)
