"""Paper Fig. 5: where the η/S invariance breaks — η = η₀β and S = S₀β for growing β, on
training sets of several sizes.

    python experiments/fig5_breakdown.py                       # Fashion-MNIST MLP variant
    python experiments/fig5_breakdown.py --seeds 0,1,2 --betas 1,3,5,7,9,11,13,15
    python experiments/fig5_breakdown.py --paper --dataset cifar10 --data-dir DIR   # GPU-sized

Every run has the same η/S = η₀/S₀ (default 0.1/50, as in the paper) but a β times larger step
and batch. The SDE picture predicts equal validation curves per epoch; it breaks for large β
(discretisation error grows with η; the gradient noise shrinks as S approaches N), sooner on
smaller training sets. Default: the MLP on Fashion-MNIST subsets of 50000, 12000 and 3000
examples, β ∈ {1, 3, 5, 9, 15}, 8 epochs. ``--paper``: VGG11 on CIFAR-10 with 45000 / 22500 /
12000 examples, β ∈ {1, 3, …, 15}, 200 epochs, η halved every 25 epochs.

Writes ``fig5.png`` (validation accuracy per epoch, one panel per training-set size, one curve
per β), ``fig5.csv``/``fig5.json`` (final and best validation accuracy, mean ± std over seeds,
diverged runs marked *). Measured on 2 CPU cores: 3.5 minutes for the default. Measured result
(one seed): on N = 50000 all five β reach 88.3-89.6 % best validation accuracy with matching
curves; on N = 12000 β = 15 (S = 750) falls behind (82.8 % against 86.1-86.5 %); on N = 3000
both β = 9 and β = 15 start far lower (47 % and 14 % after one epoch, against 77 %) and β = 15
ends lowest (78.3 % against 80.2-82.1 %): the scaling breaks for large β, sooner on smaller sets.
"""
from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402

from lrbs_tf.cli import (ArgumentParser, add_run_flags, fail, format_table,  # noqa: E402
                         quiet_tensorflow, run_all, run_kwargs)
from lrbs_tf.config import ConfigError, RunConfig  # noqa: E402
from lrbs_tf.ratio import RatioError, parse_ratio  # noqa: E402

PROG = "fig5_breakdown.py"


def _ints(text, what, low=1):
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        fail(PROG, f"{what} must be comma-separated integers, got {text!r}")
    if not values or min(values) < low:
        fail(PROG, f"{what} must be at least {low}, got {text!r}")
    return values


def main(argv=None):
    p = ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    add_run_flags(p, epochs=8, logdir="runs/fig5")
    p.add_argument("--base", default="0.1/50", help="η₀/S₀ at β = 1")
    p.add_argument("--betas", default="1,3,5,9,15")
    p.add_argument("--train-sizes", default="50000,12000,3000")
    p.add_argument("--seeds", default="0")
    p.add_argument("--lr-schedule", help="η schedule with an empty BASE, e.g. divide::25")
    p.add_argument("--paper", action="store_true")
    args = p.parse_args(argv)
    if args.paper:
        args.model, args.dataset = "vgg11", args.dataset if args.dataset != "fashion_mnist" \
            else "cifar10"
        args.epochs, args.lr_schedule = 200, args.lr_schedule or "divide::25"
        args.train_sizes = "45000,22500,12000"
        args.betas = "1,3,5,7,9,11,13,15"
    betas, sizes, seeds = (_ints(args.betas, "--betas"), _ints(args.train_sizes, "--train-sizes"),
                           _ints(args.seeds, "--seeds", low=0))
    try:
        base = parse_ratio(args.base)
        configs = []
        for size in sizes:
            for beta in betas:
                for seed in seeds:
                    kwargs = dict(run_kwargs(args), train_size=size, seed=seed)
                    lr, batch = base.lr * beta, base.batch_size * beta
                    name = f"fig5-{args.model}-n{size}-beta{beta}-seed{seed}"
                    configs.append((size, beta, RunConfig(lr=lr, batch_size=batch, name=name,
                                                          lr_schedule=args.lr_schedule,
                                                          **kwargs).validate()))
    except (ConfigError, RatioError) as e:
        fail(PROG, e)
    quiet_tensorflow()
    from lrbs_tf import runio
    from lrbs_tf.experiment import curve
    from lrbs_tf.plots import COLORS, plt

    tick = time.time()
    results = run_all(PROG, args.logdir, [
        (f"N={size} β={beta} η/S={c.lr:g}/{c.batch_size} seed={c.seed}", c)
        for size, beta, c in configs], report=_say)
    rows = []
    fig, axes = plt.subplots(1, len(sizes), figsize=(5 * len(sizes), 4), squeeze=False,
                             sharey=True)
    for ax, size in zip(axes[0], sizes):
        for j, beta in enumerate(betas):
            group = [(c, r) for (n, b, c), r in zip(configs, results) if n == size and b == beta]
            diverged = any(r["status"] == "diverged" for _, r in group)
            finals = [r.get("final_validation_accuracy") for _, r in group
                      if r.get("final_validation_accuracy") is not None]
            bests = [r.get("best_validation_accuracy") for _, r in group
                     if r.get("best_validation_accuracy") is not None]
            rows.append({"train_size": size, "beta": beta, "lr": group[0][0].lr,
                         "batch_size": group[0][0].batch_size, "seeds": len(group),
                         "final_mean": float(np.mean(finals)) if finals else None,
                         "final_std": float(np.std(finals)) if finals else None,
                         "best_mean": float(np.mean(bests)) if bests else None,
                         "best_std": float(np.std(bests)) if bests else None,
                         "diverged_seeds": sum(r["status"] == "diverged" for _, r in group)})
            curves = [curve(r, "validation_accuracy") for _, r in group if r["epochs"]]
            if curves:
                length = max(len(c) for c in curves)
                padded = np.full((len(curves), length), np.nan)
                for k, c in enumerate(curves):
                    padded[k, :len(c)] = c
                mean = np.nanmean(padded, axis=0)
                label = f"β={beta} ({rows[-1]['best_mean'] or 0:.3f})" + ("*" if diverged else "")
                ax.plot(np.arange(1, length + 1), mean, color=COLORS[j % len(COLORS)],
                        label=label, marker="o", markersize=3)
        ax.set(title=f"training set N = {size}", xlabel="epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, title="β (best val. acc.)", title_fontsize=8)
    axes[0][0].set_ylabel("validation accuracy")
    fig.suptitle(f"Fig. 5 — {args.model}: η = {base.lr:g}β, S = {base.batch_size}β "
                 "(same η/S); * = a seed diverged")
    fig.tight_layout()
    png = os.path.join(args.logdir, "fig5.png")
    fig.savefig(png, dpi=110)
    plt.close(fig)
    runio.write_csv(os.path.join(args.logdir, "fig5.csv"), rows, list(rows[0]))
    runio.write_json(os.path.join(args.logdir, "fig5.json"),
                     {"rows": rows, "wall_time": time.time() - tick})
    print()
    print(format_table(["N", "β", "η/S", "final val acc", "best val acc", "diverged"],
                       [[r["train_size"], r["beta"], f"{r['lr']:g}/{r['batch_size']}",
                         _ms(r["final_mean"], r["final_std"]), _ms(r["best_mean"], r["best_std"]),
                         f"{r['diverged_seeds']}/{r['seeds']}" + ("*" if r["diverged_seeds"] else "")]
                        for r in rows]))
    print(f"\nwrote {png}\ntime  {(time.time() - tick) / 60:.1f} min")
    return 0


def _ms(mean, std):
    return "-" if mean is None else f"{100 * mean:.2f} ± {100 * std:.2f}%"


def _say(message):
    print(message, flush=True)


if __name__ == "__main__":
    sys.exit(main())
