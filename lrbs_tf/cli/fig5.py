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

from lrbs_tf.cli.common import command, format_table, program, run_kwargs
from lrbs_tf.cli.figure import Figure, figure_main
from lrbs_tf.settings import ConfigError

PROG = program("fig5_breakdown.py")


def _ints(text, what, low=1):
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise ConfigError(f"{what} must be comma-separated integers, got {text!r}") from None
    if not values or min(values) < low:
        raise ConfigError(f"{what} must be at least {low}, got {text!r}")
    return values


def flags(p) -> None:
    p.add_argument("--base", default="0.1/50", help="η₀/S₀ at β = 1")
    p.add_argument(
        "--betas",
        default="1,3,5,9,15",
        help="comma-separated β: η = β·η0, S = β·S0 (default: 1,3,5,9,15)",
    )
    p.add_argument(
        "--train-sizes",
        help="comma-separated N (default: 50000,12000,3000 on Fashion-MNIST; else the training "
        "set's N, N/4, N/16)",
    )
    p.add_argument("--seeds", default="0", help="comma-separated seeds (default: 0)")
    p.add_argument("--lr-schedule", help="η schedule with an empty BASE, e.g. divide::25")
    p.add_argument(
        "--paper",
        action="store_true",
        help="the paper's settings: VGG11, training sets of 45000, 22500, 12000, β = 1, 3, …, "
        "15, 200 epochs, η halved every 25 (with --dataset cifar10)",
    )


def configs(args):
    from lrbs_tf.figures import fig5

    if args.paper:
        args.model = "vgg11"
        args.dataset = args.dataset if args.dataset != "fashion_mnist" else "cifar10"
        args.epochs, args.lr_schedule = 200, args.lr_schedule or "divide::25"
        args.train_sizes, args.betas = "45000,22500,12000", "1,3,5,7,9,11,13,15"
    args.train_sizes = args.train_sizes or default_sizes(args)
    betas, sizes, seeds = (
        _ints(args.betas, "--betas"),
        _ints(args.train_sizes, "--train-sizes"),
        _ints(args.seeds, "--seeds", low=0),
    )
    settings = {k: v for k, v in run_kwargs(args).items() if k not in ("train_size", "seed")}
    return fig5.configs(args.base, betas, sizes, seeds, args.lr_schedule, **settings)


def default_sizes(args) -> str:
    """The paper's 50000, 12000, 3000 on Fashion-MNIST; N, N/4, N/16 of any other data."""
    if args.dataset == "fashion_mnist":
        return "50000,12000,3000"
    from lrbs_tf.training.config import RunConfig

    settings = {k: v for k, v in run_kwargs(args).items() if k not in ("train_size", "seed")}
    n = RunConfig(lr=0.1, batch_size=1, **settings).validate().num_train
    return ",".join(str(max(1, n // d)) for d in (1, 4, 16))


def run(runs, args, say, progress):
    from lrbs_tf.figures import fig5

    return fig5.run(runs, args.logdir, say, progress=progress)


def show(report, args) -> None:
    print(
        format_table(
            ["N", "β", "η/S", "final val acc", "best val acc", "diverged"],
            [
                [
                    r["train_size"],
                    r["beta"],
                    f"{r['lr']:g}/{r['batch_size']}",
                    _ms(r["final_mean"], r["final_std"]),
                    _ms(r["best_mean"], r["best_std"]),
                    f"{r['diverged_seeds']}/{r['seeds']}" + ("*" if r["diverged_seeds"] else ""),
                ]
                for r in report["rows"]
            ],
        )
    )
    print(f"\nwrote {report['png']}\ntime  {report['wall_time'] / 60:.1f} min")


FIGURE = Figure(PROG, __doc__, flags, configs, run, show, epochs=8, logdir="runs/fig5")


@command(PROG)
def main(argv=None):
    return figure_main(FIGURE, argv)


def _ms(mean, std):
    """A mean accuracy, ± the standard deviation over seeds when there are several."""
    if mean is None:
        return "-"
    return f"{100 * mean:.2f}%" + ("" if std is None else f" ± {100 * std:.2f}")
