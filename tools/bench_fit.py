"""Throughput of lrbs_tf's training loop against a plain Keras ``model.fit``, interleaved, on
any model and data the commands take.

    python tools/bench_fit.py [--rounds 5] --train-size 20000 [--batch-sizes 25,128,1000]
    python tools/bench_fit.py --model examples/small_cnn.py:small_cnn --train-size 10000 \
        --batch-sizes 128
    python tools/bench_fit.py --model examples/res_cnn.py:res_cnn --dataset digits.npz \
        --batch-sizes 128

Both train the model ``run.py`` would build (``--model``, ``--dataset``, ``--width`` as in
``run.py``: a builder keeps its own defaults unless a flag sets them) on the same training
examples with the same batch size S, one epoch per round, alternating in one process (the
machine is noisy: compare side by side). Plain fit: the same model as a plain functional
model, ``SGD(η)``, numpy arrays with ``batch_size=S, shuffle=True`` and Keras' defaults
(``jit_compile="auto"``, off on CPU). lrbs_tf: the loop of ``experiments/run.py`` (per-epoch
dataset, RatioScaledOptimizer, per-step TensorBoard scalars, non-finite check) with the XLA and
steps-per-execution choices a run makes for that model. Prints, per S, the median examples/s of
each and ``run_vs_plain_fit_throughput: <ratio>`` (>1: lrbs_tf is faster; round 0, with its
tracing and compiles, is left out), then the per-epoch cost of what a run adds to the training
steps: its validation and test passes (every epoch) and the loss over the training set at the
weights (every epoch with a loss target, else once at the end).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def parse():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--train-size", type=int, default=None, help="default: all of it")
    p.add_argument("--batch-sizes", default="25,128,1000")
    p.add_argument("--model", default="mlp")
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--jit", default="auto", choices=("auto", "on", "off"))
    p.add_argument("--steps-per-execution", type=int, help="default: run.py's rule")
    return p.parse_args()


def main():
    args = parse()
    from lrbs_tf.cli.common import quiet_tensorflow

    quiet_tensorflow()  # TensorFlow's start-up lines out of the output
    from lrbs_tf.data.datasets import load_for
    from lrbs_tf.training.config import RunConfig

    lr_per_example = 0.1 / 100
    for batch_size in [int(s) for s in args.batch_sizes.split(",")]:
        config = RunConfig(
            lr=lr_per_example * batch_size, batch_size=batch_size, model=args.model,
            dataset=args.dataset, width=args.width, train_size=args.train_size,
            jit_compile=args.jit, steps_per_execution=args.steps_per_execution,
        ).validate()  # fmt: skip
        data = load_for(config)
        rates, added = compare(config, data, args.rounds)
        med = {k: statistics.median(v) for k, v in rates.items()}
        print(
            f"{config.model} on {config.dataset}, S={batch_size}: plain fit {med['plain']:,.0f} "
            f"ex/s, lrbs_tf {med['lrbs_tf']:,.0f} ex/s (medians of {args.rounds} interleaved "
            f"epochs of {len(data.train)} examples)"
        )
        print(f"run_vs_plain_fit_throughput: {med['lrbs_tf'] / med['plain']:.2f}  (S={batch_size})")
        epoch = len(data.train) / med["lrbs_tf"]
        print(
            f"run_adds_per_epoch: validation {added['validation']:.3f} s "
            f"({len(data.validation)} examples), test {added['test']:.3f} s "
            f"({len(data.test)}), loss at the weights {added['weights']:.3f} s "
            f"({len(data.train)}); training steps {epoch:.3f} s",
            flush=True,
        )


def compare(config, data, rounds: int) -> tuple[dict, dict]:
    """Interleaved epochs of a plain fit and of the run's loop; the medians of what a run adds
    (validation, test, loss at the weights) per epoch."""
    import keras
    import tensorflow as tf

    from lrbs_tf.core.plan import EpochPlans
    from lrbs_tf.data.pipeline import EpochData, eval_dataset
    from lrbs_tf.models.registry import build_for
    from lrbs_tf.training import fitting
    from lrbs_tf.training.evaluation import DatasetLoss
    from lrbs_tf.training.tensorboard import StepScalars

    x, y = data.train.x, data.train.y
    plain = build_for(config)
    plain = keras.Model(plain.inputs, plain.outputs)  # a plain functional model
    plain.compile(
        keras.optimizers.SGD(config.lr),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    plans = EpochPlans(config.plan(), len(y), rounds + 1)
    jit, spe = fitting.keras_choices(config, plans, None)
    val_ds = eval_dataset(data.validation.x, data.validation.y, config.eval_batch_size)
    test_ds = eval_dataset(data.test.x, data.test.y, config.eval_batch_size)
    ours = fitting.compiled_model(config, plans, jit, spe, None, None, val_ds)
    train_data = EpochData(x, y, seed=0)
    writer = tf.summary.create_file_writer(tempfile.mkdtemp(prefix="bench_fit_"))
    callbacks = [StepScalars(writer, ours.step_log)]
    weights_loss = DatasetLoss(ours, x, y)
    rates = {"plain": [], "lrbs_tf": []}
    added = {"validation": [], "test": [], "weights": []}
    for r in range(rounds + 1):  # round 0 warms up (tracing, XLA compiles)
        t_plain = timed(lambda: plain.fit(x, y, batch_size=config.batch_size, verbose=0))
        t_ours = timed(
            lambda r=r: fitting.fit_epoch(ours, train_data, plans[r].sizes, r, callbacks, 0)
        )
        costs = {
            "validation": timed(lambda: ours.evaluate(val_ds, verbose=0)),
            "test": timed(lambda: ours.evaluate(test_ds, verbose=0)),
            "weights": timed(weights_loss),
        }
        if r:
            rates["plain"].append(len(y) / t_plain)
            rates["lrbs_tf"].append(len(y) / t_ours)
            for key, seconds in costs.items():
                added[key].append(seconds)
    return rates, {k: statistics.median(v) for k, v in added.items()}


def timed(fn) -> float:
    tick = time.perf_counter()
    fn()
    return time.perf_counter() - tick


if __name__ == "__main__":
    main()
