"""Throughput of a cyclic batch size 128↔640 against constant batches, interleaved in one process.

    python tools/bench_schedules.py [--rounds 4] [--train-size 20000] [--stage 1]

Each round trains, on the same MLP and Fashion-MNIST subset: one epoch at constant S=128, one at
constant S=640, and two epochs of the cyclic schedule ``cyclic:128,640:STAGE`` (so the cyclic
run spends as many examples at each size as the two constant epochs together). The constant
baseline is their time-weighted mix: 2N examples in t(128) + t(640). Prints
``cyclic_vs_constant_throughput: <ratio>`` (1.0: the schedule costs nothing) and the number of
traces of the train step over the whole benchmark (1 means no retracing per batch size).
``--stage 0.02`` switches every few steps, the worst case.
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
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--train-size", type=int, default=20000)
    p.add_argument("--stage", type=float, default=1.0, help="cyclic stage length in epochs")
    p.add_argument(
        "--jit",
        default="off",
        choices=("on", "off"),
        help="XLA (default off: the cyclic run has 3+ batch shapes)",
    )
    args = p.parse_args()

    from lrbs_tf.cli.common import quiet_tensorflow

    quiet_tensorflow()  # TensorFlow's start-up lines out of the output

    import tensorflow as tf

    from lrbs_tf.core.optimizers import RatioModel, StepLog
    from lrbs_tf.core.plan import make_plan
    from lrbs_tf.data.fashion_mnist import load_fashion_mnist
    from lrbs_tf.data.pipeline import EpochData, eval_dataset
    from lrbs_tf.models.registry import build_model
    from lrbs_tf.training.fitting import build_metrics, compile_model, fit_epoch
    from lrbs_tf.training.tensorboard import StepScalars

    data = load_fashion_mnist(train_size=args.train_size)
    n = len(data.train)
    train_data = EpochData(data.train.x, data.train.y, seed=0)
    writer = tf.summary.create_file_writer(tempfile.mkdtemp(prefix="bench_sched_"))
    traces = {"count": 0}
    original = RatioModel.train_step

    def counting(self, batch):
        traces["count"] += 1
        return original(self, batch)

    RatioModel.train_step = counting
    plans = {
        "const128": make_plan(0.005, 128),
        "const640": make_plan(0.005, 640),
        "cyclic": make_plan(0.005, 128, bs_schedule=f"cyclic:128,640:{args.stage:g}"),
    }
    models = {}
    for name in plans:
        model = compile_model(
            build_model("mlp", data.train.x.shape[1:], 10, seed=0),
            1e-5,
            jit_compile=args.jit == "on",
        )
        model.step_log = StepLog(n // 128 + 2)
        build_metrics(model, eval_dataset(data.validation.x[:100], data.validation.y[:100]))
        models[name] = (model, [StepScalars(writer, model.step_log)])
    times = {name: [] for name in plans}
    epoch = 0
    for r in range(args.rounds + 1):  # round 0 warms up
        for name, plan in plans.items():
            model, callbacks = models[name]
            tick = time.perf_counter()
            for e in range(2 if name == "cyclic" else 1):
                sizes, ratios = plan.epoch(n, epoch + e)
                fit_epoch(model, train_data, sizes, epoch + e, callbacks, verbose=0, ratios=ratios)
            if r:
                times[name].append(time.perf_counter() - tick)
        epoch += 2
    med = {k: statistics.median(v) for k, v in times.items()}
    constant_rate = 2 * n / (med["const128"] + med["const640"])
    cyclic_rate = 2 * n / med["cyclic"]
    print(
        f"constant 128: {n / med['const128']:,.0f} ex/s, constant 640: "
        f"{n / med['const640']:,.0f} ex/s, time-weighted mix {constant_rate:,.0f} ex/s"
    )
    print(f"cyclic 128<->640 (stage {args.stage:g} epochs): {cyclic_rate:,.0f} ex/s")
    print(f"cyclic_vs_constant_throughput: {cyclic_rate / constant_rate:.2f}")
    print(
        f"train_step traces: {traces['count']} over {len(plans)} models "
        f"(one per model = no retracing per batch size)"
    )


if __name__ == "__main__":
    main()
