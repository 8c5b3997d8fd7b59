"""Helpers shared by the tests: where the repository is, whether the real Fashion-MNIST is
installed, and running a command of the repository in a subprocess."""

import hashlib
import os
import signal
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FMNIST_DIR = "/usr/share/datasets/fashion-mnist"


def have_fashion_mnist() -> bool:
    return os.path.exists(os.path.join(FMNIST_DIR, "train-images-idx3-ubyte.gz")) or bool(
        os.environ.get("LRBS_DATA_DIR")
    )


needs_fmnist = pytest.mark.skipif(
    not have_fashion_mnist(), reason="Fashion-MNIST not installed (make data)"
)


def run_script(script, *args, timeout=600, cwd=None, env=None):
    """Run a CLI script of the repo in a subprocess; returns CompletedProcess (text)."""
    # PYTHONPATH: the checkout under test, also when another one is installed (editable)
    full_env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT, **(env or {}))
    return subprocess.run(
        [sys.executable, os.path.join(ROOT, script), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd or ROOT,
        env=full_env,
    )


def identity_loss(y_true, y_pred):
    """Per-example loss = the prediction, so d(mean loss)/d(kernel) = 1 exactly for inputs of 1."""
    return y_pred[:, 0]


def unit_gradient_model(ratio, jit=False, spe=1):
    """Dense(1) on inputs ≡ 1 in float64: each SGD step moves the kernel by exactly −η."""
    import keras

    from lrbs_tf.core.optimizers import RatioModel, RatioScaledOptimizer, StepLog

    keras.config.set_floatx("float64")
    keras.config.set_dtype_policy("float64")
    inputs = keras.Input((1,))
    outputs = keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros")(inputs)
    model = RatioModel(inputs, outputs)
    model.compile(
        RatioScaledOptimizer(ratio=ratio),
        loss=identity_loss,
        jit_compile=jit,
        steps_per_execution=spe,
    )
    model.optimizer.build(model.trainable_variables)
    model.step_log = StepLog(64)
    return model


# A tiny run: one epoch of a width-16 MLP on 500 examples (a few seconds).
TINY_RUN = [
    "--ratio",
    "0.1/100",
    "--epochs",
    "1",
    "--train-size",
    "500",
    "--validation-size",
    "500",
    "--width",
    "16",
    "--jit",
    "off",  # these tests are of folders, stops and errors: no XLA compile (test_ratio tests XLA)
]


def snapshot(folder) -> dict:
    """Every entry under ``folder`` (links as links, not followed; the lock file left out) with
    its content's SHA-1, to show that nothing changed."""
    out = {}
    for root, folders, names in os.walk(folder):
        for name in folders + names:
            path = os.path.join(root, name)
            key = os.path.relpath(path, folder)
            if name == ".lrbs-lock":
                continue
            if os.path.islink(path):
                out[key] = "link -> " + os.readlink(path)
            elif os.path.isfile(path):
                out[key] = hashlib.sha1(open(path, "rb").read()).hexdigest()
            else:
                out[key] = "folder" if os.path.isdir(path) else "special"
    return out


def default_sigint():
    """``preexec_fn`` for a child that must react to SIGINT as from a terminal: a background
    job of a non-interactive shell (a suite started with ``&``) inherits SIGINT ignored."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
