"""Driver for tests/test_distribute.py: the same runs and probes on one device and under
MirroredStrategy over two logical CPUs, in one process (the CPU must be split before any
TensorFlow op, hence a subprocess). Prints one JSON line with what the test compares.

    python distributed_check.py train LOGDIR      # constant odd S, cyclic S, per-step η/S
    python distributed_check.py probe LOGDIR
"""

import json
import os
import sys

from lrbs_tf import distribute

distribute.split_cpu(2)  # before anything starts TensorFlow

import numpy as np  # noqa: E402

from lrbs_tf.training.config import RunConfig  # noqa: E402
from lrbs_tf.training.run import train  # noqa: E402
from lrbs_tf.training.tensorboard import read_scalars  # noqa: E402

COMMON = dict(
    dataset="cifar10_synthetic",
    train_size=215,
    validation_size=100,
    epochs=2,
    deterministic=True,
    overwrite=True,
    eval_batch_size=64,
)
CASES = {
    # 215 = 8 × 25 + 15: odd batches (13 + 12 per replica), an odd last batch (8 + 7)
    "constant": dict(lr=0.02, batch_size=25),
    # S alternates 25 ↔ 51 every half epoch at constant η; η/S follows
    "cyclic": dict(lr=0.02, batch_size=25, bs_schedule="cyclic:25,51:0.5"),
    # η/S itself scheduled: every step's η/S rides in the dataset
    "ratio_schedule": dict(lr=0.02, batch_size=25, ratio_schedule="cyclic:0.0008,0.0004:0.5"),
}


def weights(run_dir):
    import keras

    import lrbs_tf.optimizers  # noqa: F401  (registers RatioModel)

    model = keras.saving.load_model(os.path.join(run_dir, "model.keras"), compile=False)
    return [w.numpy() for w in model.weights]


def train_case(logdir, name, settings):
    out = {}
    for strategy in ("none", "mirrored"):
        config = RunConfig(
            logdir=logdir, name=f"{name}-{strategy}", strategy=strategy, **COMMON, **settings
        )
        results = train(config)
        scalars = read_scalars(os.path.join(config.run_dir, "tb", "train"))
        described = json.load(open(os.path.join(config.run_dir, "config.json")))["distribute"]
        out[strategy] = {
            "replicas": described["replicas"],
            "lr": [v for _, v in scalars["step/lr"]],
            "batch_size": [v for _, v in scalars["step/batch_size"]],
            "ratio": [v for _, v in scalars["step/ratio"]],
            "loss": [v for _, v in scalars["step/loss"]],
            "train_loss": [e["train_loss"] for e in results["epochs"]],
            "test_accuracy": results["final_test_accuracy"],
            "weights": weights(config.run_dir),
        }
    a, b = out["none"]["weights"], out["mirrored"]["weights"]
    for key in ("none", "mirrored"):
        del out[key]["weights"]
    out["max_weight_diff"] = max(float(np.max(np.abs(x - y))) for x, y in zip(a, b))
    out["max_weight"] = max(float(np.max(np.abs(x))) for x in a)
    return out


def probe_case():
    import keras
    import tensorflow as tf

    from lrbs_tf.models.registry import build_model
    from lrbs_tf.probes.hessian import HessianOperator
    from lrbs_tf.probes.noise import gradient_noise
    from lrbs_tf.probes.spectral import hutchpp_trace, top_eigenvalues

    rng = np.random.default_rng(0)
    x = rng.normal(size=(350, 8, 8, 1)).astype("float32")
    y = rng.integers(0, 4, 350)
    single = build_model("mlp", (8, 8, 1), 4, seed=1, width=16)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        mirrored = build_model("mlp", (8, 8, 1), 4, seed=2, width=16)
    mirrored.set_weights(single.get_weights())
    keras.utils.set_random_seed(0)
    single(x[:64], training=True)  # move BN moving statistics off their initial values
    mirrored.set_weights(single.get_weights())
    out = {}
    for name, model in (("none", single), ("mirrored", mirrored)):
        row = {}
        for bn_mode in ("inference", "batch"):
            # 350 examples in batches of 100: 4 batches (100, 100, 100, 50), 2 per replica
            op = HessianOperator(model, x, y, batch_size=100, bn_mode=bn_mode, dtype="float64")
            v = np.random.default_rng(3).standard_normal(op.dim)
            top = top_eigenvalues(op.matvec, op.dim, k=1, tol=1e-8, max_steps=80, seed=0)
            row[bn_mode] = {
                "replicas": op.settings()["replicas"],
                "hv": op.matvec(v).tolist(),
                "lambda_max": float(top.eigenvalues[0]),
                "trace": hutchpp_trace(op.matvec, op.dim, num=30, seed=1).value,
                "gradient": op.gradient().tolist(),
                "loss": op.loss_value(),
            }
        noise = gradient_noise(HessianOperator(model, x, y, batch_size=100), chunk=40)
        row["b_simple"] = noise["b_simple"]
        row["trace_c"] = noise["trace_c"]
        out[name] = row
    return out


def main():
    mode, logdir = sys.argv[1], sys.argv[2]
    if mode == "train":
        cases = sys.argv[3].split(",") if len(sys.argv) > 3 else list(CASES)
        result = {name: train_case(logdir, name, CASES[name]) for name in cases}
    else:
        result = probe_case()
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
