"""Cost of Hessian probes on any model (default: the Fashion-MNIST MLP): HVP vs gradient,
Lanczos convergence.

    python tools/bench_probes.py [--examples 1000] [--repeats 20] [--train-epochs 2]
    python tools/bench_probes.py --model examples/small_cnn.py:small_cnn --width 32

Trains the model briefly (so the curvature is that of a trained model), then, on ``--examples``
training examples in one batch, times the compiled gradient and the compiled HVP
(reverse-over-reverse and forward-over-reverse), interleaved, median of ``--repeats`` calls.
Prints ``hvp_vs_gradient_time: <ratio>`` for the default method, the number of HVPs Lanczos
needs to get λ_max within 1e-3 relative of a tightly converged reference, the number of
traces of the HVP function during the Lanczos run, ``lanczos_overhead_fraction`` (the share
of a λ_max computation spent outside the compiled HVPs: vector conversions, re-orthogonalisation
and the tridiagonal eigenproblems; median of ``--repeats`` runs) and ``first_probe_seconds``
(building the operator for a model, tracing it and λ_max on 1000 examples).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--examples", type=int, default=1000)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--train-epochs", type=int, default=2)
    p.add_argument("--model", default="mlp")
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--train-size", type=int, default=20000)
    args = p.parse_args()

    from lrbs_tf.cli.common import quiet_tensorflow

    quiet_tensorflow()  # TensorFlow's start-up lines out of the output

    import numpy as np
    import tensorflow as tf

    from lrbs_tf.data.datasets import load_for
    from lrbs_tf.data.pipeline import EpochData, eval_dataset
    from lrbs_tf.models.registry import build_for
    from lrbs_tf.probes import spectral
    from lrbs_tf.probes.hessian import HessianOperator
    from lrbs_tf.training.config import RunConfig
    from lrbs_tf.training.fitting import build_metrics, compile_model, fit_epoch

    config = RunConfig(
        lr=0.05, batch_size=128, model=args.model, dataset=args.dataset, width=args.width,
        train_size=args.train_size,
    ).validate()  # fmt: skip
    data = load_for(config)
    model = compile_model(build_for(config), 0.05 / 128)
    build_metrics(model, eval_dataset(data.validation.x[:100], data.validation.y[:100]))
    train = EpochData(data.train.x, data.train.y, seed=0)
    n = len(data.train)
    for epoch in range(args.train_epochs):
        fit_epoch(
            model, train, [128] * (n // 128) + ([n % 128] if n % 128 else []), epoch, verbose=0
        )
    print(f"{config.model} on {config.dataset}, {model.count_params():,} parameters, "
          f"{args.train_epochs} epochs of {n} examples at 0.05/128")  # fmt: skip
    x, y = data.train.x[: args.examples], data.train.y[: args.examples]
    ops = {
        m: HessianOperator(model, x, y, batch_size=args.examples, method=m) for m in ("rr", "fr")
    }
    v = tf.constant(np.random.default_rng(0).standard_normal(ops["rr"].dim), tf.float32)
    zero = tf.zeros_like(v)
    calls = {
        "gradient": lambda: ops["rr"]._grad(zero),
        "hvp_rr": lambda: ops["rr"]._hvp(v),
        "hvp_fr": lambda: ops["fr"]._hvp(v),
    }
    for fn in calls.values():
        fn().numpy()  # trace and warm up
    times = {k: [] for k in calls}
    for _ in range(args.repeats):
        for name, fn in calls.items():
            tick = time.perf_counter()
            fn().numpy()
            times[name].append(time.perf_counter() - tick)
    med = {k: statistics.median(t) for k, t in times.items()}
    print(
        f"{args.examples} examples, {ops['rr'].dim} parameters; median ms: "
        + ", ".join(f"{k} {1000 * t:.1f}" for k, t in med.items())
    )
    print(
        f"hvp_vs_gradient_time: {med['hvp_rr'] / med['gradient']:.2f}  (reverse-over-reverse, "
        f"the default)"
    )
    print(f"hvp_fr_vs_gradient_time: {med['hvp_fr'] / med['gradient']:.2f}  (forward-over-reverse)")

    op = HessianOperator(model, x, y, batch_size=min(args.examples, 1000))
    reference = spectral.top_eigenvalues(
        op.matvec, op.dim, k=1, tol=1e-9, max_steps=150, seed=1
    ).eigenvalues[0]
    needed = None
    for steps in range(2, 60):
        est = spectral.top_eigenvalues(
            op.matvec, op.dim, k=1, tol=0.0, max_steps=steps, seed=2
        ).eigenvalues[0]
        if abs(est - reference) <= 1e-3 * abs(reference):
            needed = steps
            break
    default = spectral.top_eigenvalues(op.matvec, op.dim, k=1, tol=1e-3, max_steps=100, seed=2)
    print(
        f"lambda_max reference {reference:.6g}; lanczos_hvps_for_1e-3: {needed}; the default "
        f"residual rule (tol 1e-3) stopped after {default.matvecs} HVPs at "
        f"{default.eigenvalues[0]:.6g} "
        f"(rel. error {abs(default.eigenvalues[0] / reference - 1):.1e})"
    )
    print(f"hvp_traces_during_lanczos: {op.trace_counts()['hvp']}  ({op.matvecs} HVPs)")

    vector_dtype = np.float32  # as the Prober runs Lanczos for float32 probes
    fractions = []
    for repeat in range(max(3, args.repeats // 4)):
        inside = [0.0]

        def timed(vector, inside=inside):
            tick = time.perf_counter()
            out = op.matvec(vector)
            inside[0] += time.perf_counter() - tick
            return out

        hvp_only = [0.0]
        raw = op._hvp

        def hvp_timed(vector, raw=raw, hvp_only=hvp_only):
            tick = time.perf_counter()
            out = raw(vector)
            out.numpy()
            hvp_only[0] += time.perf_counter() - tick
            return out

        op._hvp = hvp_timed
        tick = time.perf_counter()
        spectral.top_eigenvalues(
            timed, op.dim, k=1, tol=1e-3, max_steps=100, seed=10 + repeat, dtype=vector_dtype
        )
        total = time.perf_counter() - tick
        op._hvp = raw
        fractions.append((total - hvp_only[0]) / total)
    print(
        f"lanczos_overhead_fraction: {statistics.median(fractions):.2f}  (time outside the "
        "compiled HVPs / total, λ_max to tol 1e-3)"
    )
    tick = time.perf_counter()
    fresh = HessianOperator(model, x[:1000], y[:1000], batch_size=1000)
    spectral.top_eigenvalues(
        fresh.matvec, fresh.dim, k=1, tol=1e-3, max_steps=100, seed=3, dtype=vector_dtype
    )
    print(
        f"first_probe_seconds: {time.perf_counter() - tick:.2f}  (build + trace + λ_max on "
        "1000 examples)"
    )


if __name__ == "__main__":
    main()
