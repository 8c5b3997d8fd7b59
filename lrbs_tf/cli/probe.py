"""Probe the curvature and gradient noise of a saved run: λ_max, Tr H, ‖H‖_F, B_simple.

    python tools/probe.py runs/mlp-fashion_mnist-lr0.005-bs640-seed0 [--examples 5000]
        [--bn inference|batch] [--dtype float32|float64] [--json]

Loads ``model.keras`` and ``config.json`` from the run folder, rebuilds the same training split
(same data source, seed and sizes), measures on a fixed, seeded subset of the training set,
prints the values and writes them with every setting to ``<run>/probe.json``.
"""

from __future__ import annotations

import json
import os
import time

from lrbs_tf.cli.common import (
    ArgumentParser,
    fail,
    program,
    quiet_tensorflow,
    say,
    setup_logging,
)
from lrbs_tf.probes.settings import ProbeSettings
from lrbs_tf.settings import ConfigError, add_flags, values_from

PROG = program("probe.py")


def main(argv=None):
    p = ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir")
    names = add_flags(
        p,
        ProbeSettings,
        names=(
            "examples",
            "noise_examples",
            "batch_size",
            "bn_mode",
            "dtype",
            "seed",
            "finite_difference",
            "step_batch_size",
        ),
    )
    p.add_argument(
        "--density",
        action="store_true",
        help="also the spectral density by stochastic Lanczos quadrature "
        "(10 runs × 80 steps), plotted to <run>/spectral_density.png",
    )
    p.add_argument(
        "--compare-c",
        action="store_true",
        help="also compare the gradient covariance C with H (Tr C/Tr H, overlap of "
        "their top-5 eigenvector subspaces); holds --noise-examples per-example gradients in "
        "memory, 8 bytes per parameter each: 3.2 GB for 1000 examples of the MLP (8.3 GB "
        "peak measured), so lower --noise-examples on a small machine",
    )
    p.add_argument("--json", action="store_true", help="print JSON only")
    args = p.parse_args(argv)
    setup_logging()
    from lrbs_tf.training import runio
    from lrbs_tf.training.runio import read_run

    try:
        saved, results = read_run(args.run_dir, ("finished", "diverged", "interrupted"))
        model_path = os.path.join(args.run_dir, "model.keras")
        if not os.path.exists(model_path):
            raise runio.RunFolderError(f"{model_path} is missing")
        config = saved["config"]
        settings = ProbeSettings(**values_from(args, names)).validate(
            config["num_train"], prefix=""
        )
    except (runio.RunFolderError, ConfigError, KeyError, TypeError) as e:
        fail(PROG, e if not isinstance(e, KeyError) else f"config.json lacks {e}")
    quiet_tensorflow()
    from lrbs_tf.data.datasets import DataError, load_dataset
    from lrbs_tf.models.registry import load_model
    from lrbs_tf.probes.prober import Prober

    try:
        model = load_model(model_path)
    except Exception as e:  # a file from another Keras/lrbs_tf version, or damaged
        fail(PROG, f"cannot load {model_path}: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
    try:
        data = load_dataset(
            config["dataset"],
            data_dir=config.get("data_dir"),
            validation_size=config["validation_size"],
            train_size=config.get("train_size"),
            seed=config["seed"],
        )
    except DataError as e:
        fail(PROG, e)
    if data.info["train_fingerprint"] != saved["data"]["train_fingerprint"]:
        fail(PROG, "the training data differ from the run's (fingerprints do not match)")
    tick = time.time()
    prober = Prober(model, data.train.x, data.train.y, settings, step_batch=config["batch_size"])
    lr = config["lr"]
    measured = dict(prober(lr=lr), settings=prober.describe())
    density_png = os.path.join(args.run_dir, "spectral_density.png")
    if not args.density and os.path.exists(density_png):
        os.remove(density_png)  # from an earlier call: it would no longer match probe.json
    if args.density:
        say(
            f"spectral density: 10 runs × 80 Lanczos steps on {settings.examples} examples "
            f"(about {800 * measured['seconds'] / max(measured['lanczos_matvecs'] + 60, 1):.0f} "
            "s)"
        )
        from lrbs_tf.figures.plots import spectral_density_plot
        from lrbs_tf.probes import spectral

        density = spectral.slq_density(
            prober.op.matvec, prober.op.dim, runs=10, steps=80, seed=args.seed
        )
        measured["spectral_density"] = {
            "nodes": density.nodes.tolist(),
            "weights": density.weights.tolist(),
            "trace_estimate": density.trace(prober.op.dim),
        }
        measured["spectral_density_png"] = spectral_density_plot(
            density,
            density_png,
            f"Hessian spectral density (SLQ), η/S = {config['lr']:g}/{config['batch_size']}",
        )
    if args.compare_c:
        from lrbs_tf.probes.noise import compare_with_hessian

        say(
            f"C against H: per-example gradients of {settings.noise_examples} examples held in "
            f"memory ({settings.noise_examples * prober.op.dim * 8 / 2**30:.1f} GiB)"
        )

        measured["c_vs_h"] = compare_with_hessian(
            prober.noise_op, k=5, max_examples=settings.noise_examples, trace_h=None, seed=args.seed
        )
    measured["total_seconds"] = time.time() - tick  # probes, density and C vs H
    runio.write_json(os.path.join(args.run_dir, "probe.json"), measured)
    if args.json:
        print(json.dumps(runio._clean(measured), indent=2))
        return 0
    print(f"run         {args.run_dir}  (η/S = {lr:g}/{config['batch_size']})")
    print(
        f"sharpness   width {measured['width_sharpness']:.5g} (BatchNorm {settings.bn_mode}; "
        f"Lanczos {measured['lanczos_matvecs']} HVPs, converged "
        f"{all(measured['lanczos_converged'])}); step {measured['step_sharpness']:.5g} "
        f"(BatchNorm over batches of {measured['step_batch_size']}) against 2/η = {2 / lr:.5g}: "
        f"η·λ_step = {lr * measured['step_sharpness']:.3g}"
    )
    print(f"Tr H        {measured['trace']:.5g} ± {measured['trace_stderr']:.2g}  (Hutch++)")
    print(
        f"‖H‖_F       {measured['frobenius']:.5g} ± {measured['frobenius_stderr']:.2g}  "
        f"(Hutchinson)"
        + (
            f"; finite differences {measured['frobenius_fd']:.5g} (ε = {settings.fd_eps:g})"
            if "frobenius_fd" in measured
            else ""
        )
    )
    print(
        f"noise       Tr C {measured['trace_c']:.5g}, |g|² {measured['grad_norm_sq']:.4g}, "
        f"B_simple {measured['b_simple']:.5g}"
    )
    if "c_vs_h" in measured:
        c = measured["c_vs_h"]
        print(
            f"C vs H      Tr C/Tr H = {c['trace_c_over_trace_h']:.3g}, top-{c['k']} subspace "
            f"overlap {c['top_k_overlap']:.3g} (random: {c['random_overlap_baseline']:.1g})"
        )
    if "spectral_density_png" in measured:
        print(f"density     {measured['spectral_density_png']}")
    print(
        f"settings    {settings.examples} examples, BN {settings.bn_mode}, {settings.dtype}; "
        f"probes {measured['seconds']:.1f} s, {measured['total_seconds']:.1f} s in all"
    )
    print(f"wrote       {os.path.join(args.run_dir, 'probe.json')}")
    return 0
