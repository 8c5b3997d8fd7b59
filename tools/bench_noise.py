"""Cost of the gradient-noise statistics: exact per-example norms against vectorized_map.

    python tools/bench_noise.py [--examples 1000] [--repeats 5] [--no-memory]

On ``examples/small_cnn.py`` (width 32) and the paper's MLP (``build_model("mlp", (28, 28, 1),
10, seed=0)``), untrained, on ``--examples`` Fashion-MNIST training examples with BatchNorm in
inference mode (the Prober's default; probe batch 1000), times ``gradient_noise`` with the
default estimator (exact per-example gradient norms, :mod:`lrbs_tf.probes.noise_norms`) and
with :class:`lrbs_tf.probes.noise.PerExampleGradients` (``tf.vectorized_map``, chunks of 64: the
previous default), and one ordinary gradient of the same examples for scale. The three are run
interleaved in one process after one warm-up call each (the trace); medians of ``--repeats``.
Per model it prints ``noise_norms_vs_vmap_time: <ratio>`` (with the seconds, the first-call
seconds including the trace, and how far the two paths' Tr C and B_simple agree) and
``noise_norms_vs_vmap_peak_rss: <ratio>``: each path runs in a fresh subprocess that reports its
peak resident set size while computing the statistics (``VmHWM`` from ``/proc/self/status``,
reset through ``/proc/self/clear_refs`` just before) minus its resident set size just before,
for the first call (trace included) and for a second call. Linux only; ``--no-memory`` skips it.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = pathlib.Path(__file__).resolve().parent.parent
MODELS = ("small_cnn", "mlp")


def build(name: str):
    import keras

    from lrbs_tf.models.registry import build_model

    if name == "mlp":
        return build_model("mlp", (28, 28, 1), 10, seed=0)
    import importlib.util

    spec = importlib.util.spec_from_file_location("small_cnn", ROOT / "examples" / "small_cnn.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    keras.utils.set_random_seed(0)
    return module.small_cnn((28, 28, 1), 10, width=32)


def setup(name: str, examples: int):
    """The operator and both estimators for model ``name`` on the first Fashion-MNIST examples."""
    from lrbs_tf.data.fashion_mnist import load_fashion_mnist
    from lrbs_tf.probes.hessian import HessianOperator
    from lrbs_tf.probes.noise import PerExampleGradients, noise_estimator

    data = load_fashion_mnist(train_size=examples)
    op = HessianOperator(build(name), data.train.x[:examples], data.train.y[:examples])
    return op, {"norms": noise_estimator(op), "vmap": PerExampleGradients(op)}


def timing(name: str, examples: int, repeats: int) -> dict:
    from lrbs_tf.probes.noise import gradient_noise

    op, estimators = setup(name, examples)
    calls = {k: (lambda per=per: gradient_noise(op, per=per)) for k, per in estimators.items()}
    calls["gradient"] = lambda: op.gradient()
    first, results = {}, {}
    for key, call in calls.items():
        tick = time.perf_counter()
        results[key] = call()
        first[key] = time.perf_counter() - tick
    times = {k: [] for k in calls}
    for _ in range(repeats):
        for key, call in calls.items():
            tick = time.perf_counter()
            call()
            times[key].append(time.perf_counter() - tick)
    med = {k: statistics.median(t) for k, t in times.items()}
    norms, vmap = results["norms"], results["vmap"]
    return {
        "model": op.copy.name.removesuffix("_probe"),
        "parameters": op.dim,
        "method": norms["noise_method"],
        "median": med,
        "first": first,
        "agreement": {
            k: abs(norms[k] / vmap[k] - 1) for k in ("trace_c", "grad_norm_sq", "b_simple")
        },
    }


def memory_child(name: str, path: str, examples: int) -> None:
    """In a fresh process: the peak RSS above the RSS just before computing the statistics."""
    import gc

    from lrbs_tf.probes.noise import gradient_noise

    op, estimators = setup(name, examples)
    per = estimators[path]
    del estimators  # the other estimator holds nothing until called
    out = {}
    for call in ("first", "second"):
        gc.collect()
        before = _status("VmRSS")
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS
        gradient_noise(op, per=per)
        out[call] = (_status("VmHWM") - before) / 2**20
    print(json.dumps(out))


def _status(field: str) -> int:
    """A ``/proc/self/status`` size in bytes."""
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def memory(name: str, examples: int) -> dict:
    out = {}
    for path in ("norms", "vmap"):
        proc = subprocess.run(
            [sys.executable, __file__, "--memory-child", name, path, "--examples", str(examples)],
            capture_output=True,
            text=True,
            timeout=1800,
            env=dict(os.environ, PYTHONPATH=str(ROOT)),
        )
        if proc.returncode:
            raise RuntimeError(f"memory child {name} {path} failed:\n{proc.stderr[-2000:]}")
        out[path] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def report(t: dict, mem: dict | None) -> None:
    med, first = t["median"], t["first"]
    print(
        f"noise_norms_vs_vmap_time: {med['norms'] / med['vmap']:.3f}  ({t['model']}, "
        f"{t['parameters']} parameters, {t['method']}: median {med['norms']:.3f} s, vmap "
        f"{med['vmap']:.3f} s, one gradient {med['gradient']:.3f} s; first calls with the "
        f"trace {first['norms']:.2f} s and {first['vmap']:.2f} s; relative differences "
        + ", ".join(f"{k} {v:.1e}" for k, v in t["agreement"].items())
        + ")"
    )
    print(f"noise_norms_vs_gradient_time: {med['norms'] / med['gradient']:.3f}  ({t['model']})")
    if mem:
        n, v = mem["norms"], mem["vmap"]
        print(
            f"noise_norms_vs_vmap_peak_rss: {n['first'] / v['first']:.3f}  ({t['model']}: peak "
            f"RSS above the RSS before the call, first call (trace included) / second call: "
            f"exact-norms {n['first']:.0f} / {n['second']:.0f} MiB, vmap {v['first']:.0f} / "
            f"{v['second']:.0f} MiB)"
        )


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--examples", type=int, default=1000)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--no-memory", action="store_true")
    p.add_argument("--memory-child", nargs=2, metavar=("MODEL", "PATH"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.memory_child:
        memory_child(*args.memory_child, args.examples)
        return

    from lrbs_tf.cli.common import quiet_tensorflow

    quiet_tensorflow()
    for name in MODELS:
        t = timing(name, args.examples, args.repeats)
        report(t, None if args.no_memory else memory(name, args.examples))


if __name__ == "__main__":
    main()
