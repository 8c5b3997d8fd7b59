"""How far does η/S carry? Branch from one starting point θ0 at k× the batch, find where equal
η/S stops meaning equal training, and test the SDE itself.

    python experiments/scaling_test.py                              # MLP, θ0 = 1 epoch at 0.1/50
    python experiments/scaling_test.py --from runs/RUN              # a finished run, its own η/S
    python experiments/scaling_test.py --from init --model cnn.py:f --dataset d.npz --base 0.05/128

From θ0 — a run folder (at its last epoch, or ``--epoch E`` when the run kept it with
``lrbs-run --keep-epochs K``), a ``.keras`` model, a fresh
initialisation (``--from init``) or a warm-up run (``--warmup η/S:EPOCHS``, the default
0.1/50:1) — every branch trains E examples (``--examples``, default one epoch) on the same data
order, at S = k·S0 for k = 1, 2, 4, … (S ≤ N/10, ``--max-batch``, or ``--factors``) under each
rule (``--rules``: linear η = kη0, sqrt, none; for ``--optimizer adam|rmsprop`` the SDE
square-root rule ``sde``). The base (k = 1) trains under 3 data orders: the noise floor is the
95 % prediction interval of one more base run, and a branch keeps η/S equivalence when its
loss at the weights after E is inside it (where its curve leaves the floor on the way, at 8
measurement points, is shown beside). k* is the largest k that keeps it (and every smaller
one). SVAG at S0 (ℓ = 2, 4) tests the SDE itself; probes at
θ0 give B_simple and the step sharpness at every S, and with them the predicted breaks.

Prints per rule the table (k, S, η, the loss after E against the floor, steps, seconds, the
verdict), the SVAG table, predicted against measured k*, and one verdict line per rule; writes
``scaling.json``, ``scaling.csv``, ``scaling.png`` and TensorBoard files (``tb/``: every branch a
run, with per-step η, S, η/S and an HParams session) to ``--logdir/NAME``. The same command
reuses finished branches.

Measured on 2 CPU cores shared with another session (seed 0; the README has the tables):

* the default (the MLP on Fashion-MNIST, N = 50000, θ0 after 1 epoch at 0.1/50) with
  ``--factors 1,2,4,8,16,32``: 3.7 and 5.5 min with the warm-up in two runs (load average
  3.6–6.3 from another session), the test itself 3.4 and 4.3 min. Linear holds up to S = 400
  (k = 8; at S = 800 the loss after 49600 examples is 0.451 against 0.286 ± 0.057, unstable);
  sqrt up to S = 1600, the largest tried; SVAG inside the floor. Predicted: η·λ_step = 3.7
  at S ≈ 470, 2 at S ≈ 255; B_simple = 133 ± 54.
* the Keras-docs convnet (``examples/keras_convnet.py``) on 5400 images, θ0 after 1 epoch at
  0.05/128, ``--factors 1,2,4,8 --examples 10800``: 9.4 and 10.2 min. Neither rule holds at S = 256
  (0.917 and 0.976 against 0.901 ± 0.013), and SVAG ends below the floor: at η·λ_step = 1.4
  SGD is not yet the SDE there.
"""

from __future__ import annotations

import dataclasses

from lrbs_tf.cli.common import SHARED, command, format_table, program, run_kwargs
from lrbs_tf.cli.figure import Figure, figure_main
from lrbs_tf.settings import add_flags, names, values_from

PROG = program("scaling_test.py")
# The run settings the figures share, but for epochs (a branch trains E examples) and augment
RUN_FLAGS = tuple(name for name in SHARED if name not in ("epochs", "augment"))


def flags(p) -> None:
    from lrbs_tf.scaling.settings import ScaleSettings

    p.add_argument(
        "--from",
        dest="source",
        metavar="SOURCE",
        help="θ0: a finished run folder, a .keras model file or 'init' "
        "(default: --warmup 0.1/50:1)",
    )
    p.add_argument(
        "--epoch",
        type=int,
        help="the run folder's epoch: its last (the default), or one it keeps a snapshot of "
        "(lrbs-run --keep-epochs K)",
    )
    p.add_argument(
        "--warmup",
        metavar="LR/S:EPOCHS",
        help="train a warm-up run and start from its end (default 0.1/50:1 when "
        "--from is not given)",
    )
    p.add_argument("--name", help="the test's folder in --logdir (default from θ0 and η0/S0)")
    p.add_argument(
        "--trust-code",
        action="store_true",
        help="import the builder the --from run folder names even when its source file no "
        "longer has the SHA-256 the folder recorded (only for code you trust)",
    )
    add_flags(p, ScaleSettings)


def configs(args):
    from lrbs_tf.cli.stability import parse_warmup
    from lrbs_tf.scaling.plan import resolve
    from lrbs_tf.scaling.settings import ScaleSettings
    from lrbs_tf.scaling.start import describe_start
    from lrbs_tf.training.config import check_name

    if args.name is not None:
        check_name(args.name)
    warmup = args.warmup or (None if args.source else "0.1/50:1")
    flagged = [n for n in names(ScaleSettings) if n != "seed"]
    settings = ScaleSettings(**values_from(args, flagged), seed=args.seed)
    run_settings = {
        k: v for k, v in run_kwargs(args, RUN_FLAGS).items() if k not in ("logdir", "overwrite")
    }
    start = describe_start(
        args.source, args.epoch, warmup and parse_warmup(warmup), run_settings, args.logdir
    )
    resolve(settings, start.num_train, start.base, start.momentum)  # refuses what cannot run
    return settings, dataclasses.replace(start, trust_code=args.trust_code)


def run(configs, args, say, progress):
    from lrbs_tf.scaling.experiment import run

    settings, start = configs
    if args.deterministic:
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    return run(
        settings, start, args.logdir, args.name, args.overwrite, say, progress, args.deterministic
    )


def show(report, args) -> None:
    floor = report["floor"]
    after = f"{floor['mean'][-1]:.4g} ± {floor['half_width'][-1]:.2g}"
    for rule, result in report["rules"].items():
        print(f"{rule} (floor after E: {after})")
        print(
            format_table(
                ["k", "S", "η", "η/S", "loss after E", "steps", "s", "verdict"],
                [_cells(r) for r in result["rows"]],
            )
        )
        print()
    if report["svag"]["rows"]:
        print("SVAG at S0 (against steps/ℓ)")
        rows = [report["base"][0]] + report["svag"]["rows"]
        print(
            format_table(
                ["ℓ", "η", "loss after E", "steps", "s", "verdict"],
                [[r["ell"], *_cells(r)[2:3], *_cells(r)[4:]] for r in rows],
            )
        )
        print()
    for rule, k, why in report["skipped"]:
        print(f"{rule} k = {k}: n/a ({why})")
    show_predictions(report)
    print()
    for line in report["verdict"]:
        print(line)
    print(
        f"\nwrote {report['png']}, {report['csv']}\ntime  branches "
        f"{report['branch_seconds'] / 60:.1f} min ({report['train_seconds'] / 60:.1f} of them "
        "training), probes "
        f"{report['probe_seconds'] / 60:.1f} min; this session {report['wall_time'] / 60:.1f} min"
    )


def _cells(r) -> list:
    if r["keeps"]:
        verdict = "inside" + (
            f" (curve out at {r['left_at_examples']})" if r["left_at_examples"] is not None else ""
        )
    else:
        verdict = f"OUT: {r['way']} (curve out from {r['left_at_examples']})"
    return [
        r["k"],
        r["batch"],
        f"{r['lr']:.4g}",
        f"{r['ratio']:.4g}",
        f"{r['loss_after']:.4g}",
        r["steps"],
        f"{r['train_seconds']:.1f}",
        verdict,
    ]


def show_predictions(report) -> None:
    predicted, batch0 = report["predictions"], report["plan"]["batch0"]
    header = ["rule", "measured k*", "S*", "stability (3.7)", "quadratic (2)", "S ≤ B_simple"]
    rows = []
    for rule, result in report["rules"].items():
        p = predicted["rules"][rule] if predicted else None
        rows.append(
            [rule, result["k_star"], result["s_star"]]
            + (
                [
                    _edge(p, "stability", batch0),
                    _edge(p, "quadratic", batch0),
                    predicted["k_star_b_simple"] or "-",
                ]
                if p
                else ["-", "-", "-"]
            )
        )
    print("\nk* measured and predicted (k; S where the edge is crossed)")
    print(format_table(header, rows))
    if predicted:
        print(
            f"B_simple at θ0 = {predicted['b_simple']:.4g} ± "
            f"{predicted['b_simple_stderr']:.2g}; definitions in scaling.json (predictions)"
        )


def _edge(p, key, batch0) -> str:
    edge = p[f"edge_batch_{key}"]
    return f"{p[f'k_star_{key}']}" + (f" (S ≈ {edge:.0f})" if edge else "")


FIGURE = Figure(
    PROG, __doc__, flags, configs, run, show, logdir="runs/scaling", run_flags=RUN_FLAGS
)


@command(PROG)
def main(argv=None):
    return figure_main(FIGURE, argv)
