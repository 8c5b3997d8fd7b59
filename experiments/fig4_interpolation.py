"""Paper Fig. 4: the loss along the line between trained models, and a random plane.

    python experiments/fig4_interpolation.py            # three Fashion-MNIST MLP runs
    python experiments/fig4_interpolation.py --paper --dataset cifar10 --data-dir DIR

Trains (or reuses) three runs — A = 0.1/128, B = 0.1/1024 and C = 0.0125/128 (B and C share
η/S = 9.8e-5, 8× below A's) — then evaluates train and validation loss and accuracy along
(1 − α)θ₁ + αθ₂ for α ∈ [−1, 2] (31 points) for the pairs A→B, A→C (different ratios: the
basin around the higher-ratio model A at α = 0 should be the wider one) and B→C (same ratio:
similar widths), with BatchNorm statistics recomputed on training data at every α
(``--bn interpolate`` to interpolate them instead). Also a 2-D filter-normalised random plane
around A and around B. ``--paper`` gives the paper's pairs: ResNet56 0.1/128 vs 0.1/1024 vs
0.01/128, and VGG11 with η = 0.1β, S = 50β for β = 0.25, 1, 4 (GPU-sized).

Writes ``fig4.png`` (one panel per pair, like the paper's), ``fig4_plane.png`` and
``fig4.json``. Measured on 2 CPU cores: 1.5 minutes for the default (8 epochs per run).
Measured result: along A→B the train loss rises from 0.136 at A (α=0) to 0.169 at α=−0.5
but from 0.220 at B (α=1) to 0.448 at α=1.5 — the low-ratio side is the sharp one, as in the
paper; A→C looks the same (0.230 → 0.452), while B→C (equal η/S) stays between 0.221 and 0.236
on both sides.
"""
from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402

from lrbs_tf.cli import (ArgumentParser, add_run_flags, fail, quiet_tensorflow,  # noqa: E402
                         reported_errors, run_all, run_kwargs)
from lrbs_tf.config import ConfigError, RunConfig  # noqa: E402

PROG = "fig4_interpolation.py"
DEFAULT = {"A": (0.1, 128), "B": (0.1, 1024), "C": (0.0125, 128)}
PAIRS = [("A", "B"), ("A", "C"), ("B", "C")]


def runs_for(args):
    if args.paper:
        if args.model == "vgg11":
            return {f"β={b:g}": (0.1 * b, int(50 * b)) for b in (0.25, 1, 4)}, \
                [("β=0.25", "β=1"), ("β=1", "β=4")]
        return {"A": (0.1, 128), "B": (0.1, 1024), "C": (0.01, 128)}, [("A", "B"), ("A", "C")]
    return DEFAULT, PAIRS


def main(argv=None):
    p = ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    add_run_flags(p, epochs=8, logdir="runs/fig4")
    p.add_argument("--paper", action="store_true", help="the paper's ResNet56/VGG11 pairs")
    p.add_argument("--bn", choices=("recompute", "interpolate"), default="recompute")
    p.add_argument("--points", type=int, default=31, help="α values in [-1, 2]")
    p.add_argument("--eval-examples", type=int, default=5000,
                   help="training and validation examples to evaluate on")
    p.add_argument("--plane-points", type=int, default=11, help="0 skips the random plane")
    args = p.parse_args(argv)
    if args.paper and args.model == "mlp":
        args.model = "resnet56"
    runs, pairs = runs_for(args)
    try:
        if args.points < 2 or args.eval_examples < 1 or args.plane_points < 0:
            raise ConfigError("--points must be at least 2, --eval-examples at least 1")
        configs = {k: RunConfig(lr=lr, batch_size=bs, name=f"fig4-{args.model}-lr{lr:g}-bs{bs}"
                                f"-seed{args.seed}", **run_kwargs(args)).validate()
                   for k, (lr, bs) in runs.items()}
    except ConfigError as e:
        fail(PROG, e)
    quiet_tensorflow()
    import keras

    import lrbs_tf.models  # noqa: F401  (registers custom classes for loading)
    from lrbs_tf import landscape, runio
    from lrbs_tf.data import load_dataset
    from lrbs_tf.plots import plt

    tick = time.time()
    os.makedirs(args.logdir, exist_ok=True)
    run_all(PROG, args.logdir, [(f"run {key}: η/S = {c.lr:g}/{c.batch_size}", c)
                                for key, c in configs.items()], report=_say)
    models = {key: keras.models.load_model(os.path.join(c.run_dir, "model.keras"))
              for key, c in configs.items()}
    any_config = next(iter(configs.values()))
    with reported_errors(PROG, args.logdir):
        data = load_dataset(any_config.dataset, data_dir=any_config.data_dir,
                            validation_size=any_config.val_size,
                            train_size=any_config.train_size, seed=any_config.seed)
    n = args.eval_examples
    train_xy = (data.train.x[:n], data.train.y[:n])
    val_xy = (data.validation.x[:n], data.validation.y[:n])
    alphas = np.linspace(-1, 2, args.points)
    curves = {}
    for a, b in pairs:
        print(f"interpolating {a} → {b}", flush=True)
        curves[f"{a}->{b}"] = landscape.interpolate(models[a], models[b], train_xy, val_xy,
                                                    alphas, bn=args.bn)
    fig, axes = plt.subplots(1, len(pairs), figsize=(5.2 * len(pairs), 4), squeeze=False)
    for ax, (a, b) in zip(axes[0], pairs):
        c = curves[f"{a}->{b}"]
        ax.plot(alphas, c["train_loss"], "b-", label="train loss")
        ax.plot(alphas, c["validation_loss"], "b--", label="validation loss")
        ax.set_yscale("log")
        ax.set_xlabel("α")
        ax.set_ylabel("cross-entropy")
        twin = ax.twinx()
        twin.plot(alphas, c["train_accuracy"], "r-", label="train accuracy")
        twin.plot(alphas, c["validation_accuracy"], "r--", label="validation accuracy")
        twin.set_ylabel("accuracy", color="r")
        ra, rb = configs[a], configs[b]
        ax.set_title(f"α=0: {a} {ra.lr:g}/{ra.batch_size}  →  α=1: {b} {rb.lr:g}/{rb.batch_size}",
                     fontsize=9)
        ax.axvline(0, color="gray", lw=0.5)
        ax.axvline(1, color="gray", lw=0.5)
        ax.legend(loc="upper left", fontsize=7)
        twin.legend(loc="upper right", fontsize=7)
    fig.suptitle(f"Fig. 4 — {args.model} on {data.name}: loss between minima "
                 f"(BatchNorm: {args.bn})" + (" [SYNTHETIC DATA]" if "synthetic" in data.name
                                              else ""))
    fig.tight_layout()
    png = os.path.join(args.logdir, "fig4.png")
    fig.savefig(png, dpi=110)
    plt.close(fig)
    planes = {}
    png_plane = None
    if args.plane_points:
        keys = list(configs)[:2]
        fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 4.2), squeeze=False)
        for ax, key in zip(axes[0], keys):
            print(f"random plane around {key}", flush=True)
            plane = landscape.random_plane(models[key], (train_xy[0][:2000], train_xy[1][:2000]),
                                           points=args.plane_points, seed=args.seed)
            planes[key] = plane
            grid = np.array(plane["coordinates"])
            cs = ax.contourf(grid, grid, np.log10(np.array(plane["loss"]).T), levels=20,
                             cmap="viridis")
            fig.colorbar(cs, ax=ax, label="log10 train loss")
            cfg = configs[key]
            ax.set_title(f"{key}: {cfg.lr:g}/{cfg.batch_size} (filter-normalised plane)",
                         fontsize=9)
            ax.set_xlabel("direction 1")
            ax.set_ylabel("direction 2")
        fig.tight_layout()
        png_plane = os.path.join(args.logdir, "fig4_plane.png")
        fig.savefig(png_plane, dpi=110)
        plt.close(fig)
    runio.write_json(os.path.join(args.logdir, "fig4.json"), {
        "runs": {k: {"lr": c.lr, "batch_size": c.batch_size, "ratio": c.ratio,
                     "run_dir": c.run_dir} for k, c in configs.items()},
        "curves": curves, "planes": planes, "bn": args.bn, "eval_examples": n,
        "dataset": data.name, "wall_time": time.time() - tick})
    for key, c in curves.items():
        print(f"{key}: train loss at α=0 {c['train_loss'][np.argmin(abs(alphas))]:.4f}, "
              f"α=1 {c['train_loss'][np.argmin(abs(alphas - 1))]:.4f}, "
              f"α=-0.5 {c['train_loss'][np.argmin(abs(alphas + 0.5))]:.4f}, "
              f"α=1.5 {c['train_loss'][np.argmin(abs(alphas - 1.5))]:.4f}")
    print(f"wrote {png}" + (f"\n      {png_plane}" if png_plane else "")
          + f"\ntime  {(time.time() - tick) / 60:.1f} min")
    return 0


def _say(message):
    print(message, flush=True)


if __name__ == "__main__":
    sys.exit(main())
