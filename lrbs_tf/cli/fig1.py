"""Paper Fig. 1: a cyclic batch size (CBS) matches a cyclic learning rate (CLR) of equal η/S.

    python experiments/fig1_cyclic.py                 # Fashion-MNIST MLP, 24 epochs
    python experiments/fig1_cyclic.py --epochs 300 --model vgg11 --dataset cifar10   # paper

Four runs, square waves with 4-epoch stages starting in the low-noise stage:
  CBS  S 640↔128 at η = 0.005          CLR  η 0.001↔0.005 at S = 128
  constant 0.001/128                   constant 0.005/640
Both pairs have the same η/S at every step (7.8e-6 ↔ 3.9e-5, and 7.8e-6). If SGD's dynamics
depend on η/S only, each pair's learning curves coincide per epoch (per data point).

Writes ``<logdir>/fig1.png`` (train and test accuracy per epoch; left the cyclic pair, right
the constant pair; a second PNG ``fig1_sde_time.png`` against SDE time Σ η), ``fig1.csv`` /
``fig1.json`` (best and final test accuracy, curve distances) and prints the table. Finished
runs are reused when the command is repeated.

Measured on 2 CPU cores: 3 min 40 s for the default. Measured result: within-pair curve
distances (mean |Δ test accuracy| over epochs) 0.0005 (cyclic) and 0.0007 (constant) against
0.020 across pairs; best test accuracy 86.6 % / 86.6 % (cyclic pair), 84.7 % / 84.7 %.
"""

from __future__ import annotations

from lrbs_tf.cli.common import command, format_table, percent, program, run_kwargs
from lrbs_tf.cli.figure import Figure, figure_main
from lrbs_tf.settings import ConfigError

PROG = program("fig1_cyclic.py")


def flags(p) -> None:
    p.add_argument("--stage", type=float, default=4, help="stage length in epochs")


def configs(args):
    from lrbs_tf.figures import fig1

    if not args.stage > 0:
        raise ConfigError(f"--stage must be positive, got {args.stage}")
    return fig1.configs(args.stage, **run_kwargs(args))


def run(runs, args, say, progress):
    from lrbs_tf.figures import fig1

    return fig1.run(runs, args.logdir, say, progress=progress)


def show(report, args) -> None:
    table, distances = report["runs"], report["curve_distances"]
    within, across = report["within_pair"], report["across_pairs"]
    print()
    print(
        format_table(
            ["setting", "η/S at start", "best test acc", "final test acc", "status"],
            [
                [
                    r["setting"],
                    f"{r['ratio_start']:.3g}",
                    percent(r["best_test_accuracy"]),
                    percent(r["final_test_accuracy"]),
                    r["status"],
                ]
                for r in table
            ],
        )
    )
    print("\ncurve distance = mean |Δ test accuracy| over epochs")
    print(
        format_table(
            ["pair of runs", "test", "train"],
            [
                [k, f"{v:.4f}", f"{distances['train_accuracy'][k]:.4f}"]
                for k, v in distances["test_accuracy"].items()
            ],
        )
    )
    verdict = (
        "each pair is closer to itself than to the other pair"
        if report["pairs_closer_than_across"]
        else "NOT every pair is closer to itself than across pairs"
    )
    print(
        f"\nwithin pairs {', '.join(f'{d:.4f}' for d in within)}; across pairs "
        f"{', '.join(f'{d:.4f}' for d in across)}: {verdict}"
    )
    print(f"\nwrote {report['png'][0]}\n      {report['png'][1]}\n      {report['csv']}")


FIGURE = Figure(PROG, __doc__, flags, configs, run, show, epochs=24, logdir="runs/fig1")


@command(PROG)
def main(argv=None):
    return figure_main(FIGURE, argv)
