"""Throughput of lrbs_tf's training loop against a plain Keras ``model.fit``, interleaved.

    python tools/bench_fit.py [--rounds 5] [--train-size 20000]

Both train the same MLP on the same Fashion-MNIST examples with the same batch size S, one
epoch per round, alternating in one process (the machine is noisy: compare side by side). Plain
fit: the same MLP as a plain functional model, ``SGD(η)``, numpy arrays with
``batch_size=S, shuffle=True`` and Keras' defaults (``jit_compile="auto"``, which is off on
CPU). lrbs_tf: the loop of ``experiments/run.py`` (per-epoch dataset, RatioScaledOptimizer,
per-step TensorBoard scalars, non-finite check) with its default XLA and steps-per-execution
settings. Prints, per S, the median examples/s of each and
``run_vs_plain_fit_throughput: <ratio>`` (>1: lrbs_tf is faster).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--train-size", type=int, default=20000)
    p.add_argument("--batch-sizes", default="25,128,1000")
    p.add_argument("--jit", default="auto", choices=("auto", "on", "off"))
    p.add_argument(
        "--steps-per-execution",
        type=int,
        help="default: run.py's rule, about 512 examples per call (at most 32)",
    )
    args = p.parse_args()

    from lrbs_tf.cli.common import quiet_tensorflow

    quiet_tensorflow()  # TensorFlow's start-up lines out of the output

    import keras
    import tensorflow as tf

    from lrbs_tf.core.optimizers import StepLog
    from lrbs_tf.core.plan import epoch_batch_sizes
    from lrbs_tf.data.fashion_mnist import load_fashion_mnist
    from lrbs_tf.data.pipeline import EpochData, eval_dataset
    from lrbs_tf.models.registry import build_model
    from lrbs_tf.training.fitting import build_metrics, compile_model, fit_epoch
    from lrbs_tf.training.tensorboard import StepScalars

    data = load_fashion_mnist(train_size=args.train_size)
    x, y = data.train.x, data.train.y
    lr_per_example = 0.1 / 100
    writer = tf.summary.create_file_writer(tempfile.mkdtemp(prefix="bench_fit_"))
    jit = args.jit != "off"

    for batch_size in [int(s) for s in args.batch_sizes.split(",")]:
        plain = build_model("mlp", x.shape[1:], 10, seed=0)
        plain = keras.Model(plain.inputs, plain.outputs)  # a plain functional model
        plain.compile(
            keras.optimizers.SGD(lr_per_example * batch_size),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
        spe = args.steps_per_execution or max(1, min(32, 512 // batch_size))
        ours = compile_model(
            build_model("mlp", x.shape[1:], 10, seed=0),
            lr_per_example,
            jit_compile=jit,
            steps_per_execution=spe,
        )
        train_data = EpochData(x, y, seed=0)
        ours.step_log = StepLog(len(y) // batch_size + 1)
        build_metrics(ours, eval_dataset(data.validation.x[:100], data.validation.y[:100]))
        callbacks = [StepScalars(writer, ours.step_log)]
        rates = {"plain": [], "lrbs_tf": []}
        for r in range(args.rounds + 1):  # round 0 warms up (tracing, XLA compiles)
            tick = time.perf_counter()
            plain.fit(x, y, batch_size=batch_size, epochs=1, shuffle=True, verbose=0)
            t_plain = time.perf_counter() - tick
            sizes = epoch_batch_sizes(len(y), batch_size, r)
            tick = time.perf_counter()
            fit_epoch(ours, train_data, sizes, r, callbacks, verbose=0)
            t_ours = time.perf_counter() - tick
            if r:
                rates["plain"].append(len(y) / t_plain)
                rates["lrbs_tf"].append(len(y) / t_ours)
        med = {k: statistics.median(v) for k, v in rates.items()}
        print(
            f"S={batch_size}: plain fit {med['plain']:,.0f} ex/s, lrbs_tf {med['lrbs_tf']:,.0f} "
            f"ex/s (medians of {args.rounds} interleaved epochs of {len(y)} examples)"
        )
        print(
            f"run_vs_plain_fit_throughput: {med['lrbs_tf'] / med['plain']:.2f}  (S={batch_size})",
            flush=True,
        )


if __name__ == "__main__":
    main()
