"""Throughput under tf.distribute, measured side by side: one device vs MirroredStrategy on
two logical CPUs (same process, interleaved) vs two MultiWorkerMirroredStrategy workers on
127.0.0.1 (tools/launch_workers.py). Same model, data, η/S and epochs; examples/s is the
training throughput recorded in each run's results.json (evaluation excluded).

    python tools/bench_distribute.py                   # S = 128 and 512, 10000 examples, 2 rounds

Prints ``mirrored_vs_single_throughput`` and ``multiworker_vs_single_throughput`` per S
(medians over rounds). On a machine without GPUs these measure the cost of the distribution
logic (all-reduces, synchronized BatchNorm, per-step collectives over gRPC), not a speed-up:
both replicas share the same two cores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

from lrbs_tf.cli.common import ArgumentParser, quiet_tensorflow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv=None):
    p = ArgumentParser(prog="bench_distribute.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--batch-sizes", default="128,512")
    p.add_argument("--train-size", type=int, default=10000)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--no-multiworker", action="store_true")
    args = p.parse_args(argv)
    quiet_tensorflow()
    from lrbs_tf import distribute

    distribute.split_cpu(2)
    import numpy as np

    from lrbs_tf.training.config import RunConfig
    from lrbs_tf.training.run import train

    logdir = tempfile.mkdtemp(prefix="bench-distribute-")
    common = dict(
        lr=0.05,
        train_size=args.train_size,
        validation_size=1000,
        epochs=args.epochs,
        logdir=logdir,
        overwrite=True,
        jit_compile="off",
    )
    speeds: dict = {}
    for size in map(int, args.batch_sizes.split(",")):
        for r in range(args.rounds):
            for strategy in ("none", "mirrored"):
                results = train(
                    RunConfig(
                        batch_size=size, strategy=strategy, name=f"{strategy}-{size}-{r}", **common
                    )
                )
                speeds.setdefault((size, strategy), []).append(results["examples_per_second"])
            if not args.no_multiworker:
                speeds.setdefault((size, "multiworker"), []).append(
                    multiworker(size, r, args, logdir)
                )
    print(
        f"{'S':>5}  {'single':>10}  {'mirrored':>10}  {'multiworker':>11}  (examples/s, "
        f"median of {args.rounds})"
    )
    for size in map(int, args.batch_sizes.split(",")):
        med = {k: float(np.median(v)) for (s, k), v in speeds.items() if s == size}
        print(
            f"{size:>5}  {med['none']:>10,.0f}  {med['mirrored']:>10,.0f}  "
            f"{med.get('multiworker', float('nan')):>11,.0f}"
        )
        print(f"mirrored_vs_single_throughput S={size}: {med['mirrored'] / med['none']:.2f}")
        if "multiworker" in med:
            print(
                f"multiworker_vs_single_throughput S={size}: {med['multiworker'] / med['none']:.2f}"
            )


def multiworker(size, round_, args, logdir) -> float:
    name = f"multiworker-{size}-{round_}"
    proc = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "tools", "launch_workers.py"),
            "-n",
            "2",
            "--timeout",
            "900",
            "--",
            "experiments/run.py",
            "--lr",
            "0.05",
            "--batch-size",
            str(size),
            "--train-size",
            str(args.train_size),
            "--validation-size",
            "1000",
            "--epochs",
            str(args.epochs),
            "--logdir",
            logdir,
            "--name",
            name,
            "--overwrite",
            "--jit",
            "off",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=1000,
    )
    if proc.returncode:
        raise SystemExit(f"multi-worker run failed:\n{proc.stdout[-2000:]}")
    return json.load(open(os.path.join(logdir, name, "results.json")))["examples_per_second"]


if __name__ == "__main__":
    main()
