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

import numpy as np

from lrbs_tf.cli.common import command, program, run_kwargs
from lrbs_tf.cli.figure import Figure, figure_main
from lrbs_tf.settings import ConfigError

PROG = program("fig4_interpolation.py")


def flags(p) -> None:
    p.add_argument("--paper", action="store_true", help="the paper's ResNet56/VGG11 pairs")
    p.add_argument(
        "--bn",
        choices=("recompute", "interpolate"),
        default="recompute",
        help="BatchNorm statistics along the line: recomputed on training data at each point, "
        "or interpolated like the weights (default: recompute)",
    )
    p.add_argument("--points", type=int, default=31, help="α values in [-1, 2]")
    p.add_argument(
        "--eval-examples",
        type=int,
        default=5000,
        help="training and validation examples to evaluate on",
    )
    p.add_argument("--plane-points", type=int, default=11, help="0 skips the random plane")


def configs(args):
    from lrbs_tf.figures import fig4

    if args.paper and args.model == "mlp":
        args.model = "resnet56"
    runs, pairs = fig4.runs_for(args.paper, args.model)
    if args.points < 2 or args.eval_examples < 1 or args.plane_points < 0:
        raise ConfigError("--points must be at least 2, --eval-examples at least 1")
    return fig4.configs(runs, **run_kwargs(args)), pairs


def run(configs_and_pairs, args, say, progress):
    from lrbs_tf.figures import fig4

    configs, pairs = configs_and_pairs
    return fig4.run(
        configs,
        pairs,
        args.logdir,
        args.bn,
        args.points,
        args.eval_examples,
        args.plane_points,
        say,
        progress=progress,
    )


def show(report, args) -> None:
    alphas = np.linspace(-1, 2, args.points)
    for key, c in report["curves"].items():
        at = {a: c["train_loss"][np.argmin(abs(alphas - a))] for a in (0, 1, -0.5, 1.5)}
        print(
            f"{key}: train loss at α=0 {at[0]:.4f}, α=1 {at[1]:.4f}, α=-0.5 {at[-0.5]:.4f}, "
            f"α=1.5 {at[1.5]:.4f}"
        )
    print("wrote " + "\n      ".join(report["png"]) + f"\ntime  {report['wall_time'] / 60:.1f} min")


FIGURE = Figure(PROG, __doc__, flags, configs, run, show, epochs=8, logdir="runs/fig4")


@command(PROG)
def main(argv=None):
    return figure_main(FIGURE, argv)
