"""Paper Fig. 3: η/S against the curvature and accuracy of the minima SGD reaches.

    python experiments/fig3_grid.py --preset quick       # 6 points, 1.7 decades, 13 min
    python experiments/fig3_grid.py --preset standard    # 12 points, 1e-5 … 2e-3
    python experiments/fig3_grid.py --preset paper --max-minutes 120   # in sittings

Every (η, S) point trains the paper's 4-layer batch-normalised ReLU MLP (width 256, plain SGD;
or ``--model``/``--dataset`` of your own, with ``--lrs``/``--batch-sizes`` fitted to its size)
until the loss over the whole training set at its weights (BatchNorm in inference mode, as the
probes see the model) is at most the loss target, checked after every epoch; a run that reaches
the epoch cap first is "capped" (hollow in the figure, not in the correlations). Then, at the
saved weights: λ_max (Lanczos), ‖H‖_F (Hutchinson; the paper's finite-difference estimate is
in the table with its ε), Tr H, B_simple, validation and test accuracy.

Outputs in ``--logdir`` (default ``runs/fig3-<preset>``): ``fig3.csv``/``fig3.json`` (one row
per run, Spearman correlations with η/S, the decades λ_max spans, the spread of the final
losses), ``fig3.png`` and the TensorBoard HParams dashboard. A repeated command reuses finished
runs and resumes a killed one; ``--max-minutes M`` stops at the first run boundary after M
minutes, and the same command continues. In keras-tuner's distributed mode
(``tools/launch_tuner.py``) the chief hands out the points and writes the report.

Every preset stops at a training-set loss of 0.05 at the final weights (98.2-99.3 % training
accuracy); why that target, with the drift of λ_max past it, is in the comment on
``lrbs_tf.figures.fig3.LOSS_TARGET``. Measured on 2 CPU cores (Fashion-MNIST 50k/10k split):

``--preset quick`` (6 points, 0.04/1000 … 0.1/50: η/S from 4e-5 to 2e-3, seed 0, probes on
2000 examples): 13.0 min on an otherwise idle machine; all 6 at the target after 19-56 epochs;
final-weights losses 0.033-0.049 (within ×1.5); λ_max 382, 204, 216, 94, 31, 16 — 1.4 decades
over 1.7 decades of η/S. Spearman ρ with η/S: λ_max −0.94, ‖H‖_F −1.00, Tr H −1.00, validation
and test accuracy +0.94 (n = 6).

``--preset standard --seeds 0,1`` (12 points from 1e-5 to 2e-3, 2.3 decades; probes on 5000
examples; our run is in ``results/fig3-standard/``): 24/24 at the target after 19-187 epochs,
none capped or diverged; λ_max from 550 (0.02/1000, seed 1) down to 10.5 (0.05/25, seed 0), 1.6
decades; validation accuracy from 87.7 % to 90.0 %. Spearman ρ with η/S (n = 24): λ_max −0.98
(p 6e-16), ‖H‖_F −0.99, Tr H −0.99, validation accuracy +0.83 (p 7e-7), test accuracy +0.82;
the final-weights loss −0.32 (p 0.13: no trend, the runs are at equal loss, within ×1.54).
Equal η/S with different S, seed 0: at 1e-3, 0.1/100 and 0.05/50 give λ_max 32.4 and 33.3; at
2e-3, 0.1/50 and 0.05/25 give 14.3 and 10.5; at 1e-4, 0.1/1000 and 0.025/250 give 194 and 283:
similar, not equal. Time: ``--preset standard`` (seed
0 alone) 53.0 min on otherwise idle cores, with the same numbers as our seed-0 runs to 4 digits;
the cost model (``lrbs_tf.figures.fig3_cost``) estimated 38 min — it was measured on a faster
day (1.95 s per S = 1000 epoch against 2.8-3.0 s in this run); for ``quick`` it said 12.3 min.

``--preset paper`` (the 63-point grid, 3 seeds) is estimated at 11.3 hours: run it in sittings
with ``--max-minutes``.

Against the paper (``results/fig3-level/``): the trend and the accuracies match, the level of
λ_max does not — ours is 0.14-0.37× the paper's panel on 5000 examples. Width, BatchNorm ε and
momentum, input standardisation, 200 epochs and finite-difference HVPs do not explain it; the
examples λ_max is computed on do: on one mini-batch of 50 training examples (mean of 10 draws)
the same minima give 946, 152 and 84 at η/S = 1e-4, 1e-3 and 2e-3, against the paper's ≈ 1000,
165 and 77 — the upward bias of a small batch's λ_max, on the assumption (not stated in the
paper) that it measured one mini-batch.
"""

from __future__ import annotations

import dataclasses
import logging
import os

from lrbs_tf.cli.common import (
    DEVICES,
    ArgumentParser,
    add_run_flags,
    add_verbose_flag,
    command,
    fail,
    format_table,
    program,
    quiet_tensorflow,
    refuse_multiworker_sweep,
    reported_errors,
    run_kwargs,
    say,
    seconds,
    setup_logging,
    split_cpu_now,
)
from lrbs_tf.figures.fig3 import PRESETS, QUANTITIES, grid
from lrbs_tf.settings import ConfigError

PROG = program("fig3_grid.py")
RUN_FLAGS = ("model", "width", "dataset", "validation_size", "data_dir", "deterministic") + DEVICES


def _numbers(text: str, flag: str, kind=float) -> tuple:
    """A comma-separated list of positive numbers (non-negative whole numbers for seeds)."""
    import math

    items = [v.strip() for v in text.split(",")]
    if not text.strip() or not all(items):
        fail(PROG, f"{flag} needs a comma-separated list of numbers, got {text!r}")
    try:
        values = tuple(kind(v) for v in items)
    except ValueError:
        fail(PROG, f"{flag}: {text!r} is not a list of {'whole ' if kind is int else ''}numbers")
    low = 0 if flag == "--seeds" else 1e-300
    if not all(math.isfinite(v) and v >= low for v in values):
        fail(
            PROG,
            f"{flag} values must be finite and {'>= 0' if low == 0 else 'positive'}, got {text!r}",
        )
    if flag == "--seeds" and max(values) >= 2**31:
        fail(PROG, f"--seeds must be below 2^31, got {text!r}")
    repeated = sorted({v for v in values if values.count(v) > 1})
    if repeated:
        fail(PROG, f"{flag} repeats {', '.join(map(str, repeated))}: each value once")
    return values


def parser() -> ArgumentParser:
    p = ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="quick",
        help="quick: 6 (η, S) points, probes on 2000 examples; standard: 12 points, 5000 "
        "(default: quick)",
    )
    p.add_argument(
        "--lrs",
        help="comma-separated η values: the grid η × --batch-sizes replaces the preset's points",
    )
    p.add_argument("--batch-sizes", help="comma-separated S values (with --lrs)")
    p.add_argument("--epochs", type=int, help="the epoch cap (every epoch without a target)")
    target = p.add_mutually_exclusive_group()
    target.add_argument(
        "--loss-target",
        type=float,
        help="stop a run when its training-set loss at the weights is at most this",
    )
    target.add_argument("--no-loss-target", action="store_true", help="train every run --epochs")
    p.add_argument("--seeds", help="comma-separated seeds (default: the preset's, 0)")
    p.add_argument(
        "--train-size",
        type=int,
        help="train on a seeded subset of this size (default: the preset's)",
    )
    p.add_argument(
        "--probe-examples",
        type=int,
        metavar="N",
        help="examples of the curvature probes (default: the preset's, at most the training set)",
    )
    p.add_argument(
        "--probe-noise-examples",
        type=int,
        metavar="N",
        help="examples of the gradient-noise probe (default: the preset's, at most the "
        "training set)",
    )
    p.add_argument(
        "--max-minutes",
        type=float,
        help="stop at the first run boundary after this many minutes; the same command continues",
    )
    p.add_argument("--logdir", default=None, help="default: runs/fig3-<preset>")
    p.add_argument(
        "--connect-timeout",
        type=seconds,
        default=60,
        help="distributed workers: seconds to wait for the chief (default: 60)",
    )
    add_run_flags(p, names=RUN_FLAGS)
    add_verbose_flag(p)
    return p


def parse(argv):
    """``(args, preset with the flags' changes, one base RunConfig per seed)``."""
    args = parser().parse_args(argv)
    setup_logging(args.verbose)
    refuse_multiworker_sweep(PROG, args)
    if args.max_minutes is not None and not args.max_minutes > 0:
        fail(PROG, f"--max-minutes must be positive, got {args.max_minutes}")
    preset = preset_of(args)
    args.logdir = args.logdir or f"runs/fig3-{args.preset}"
    from lrbs_tf.figures.fig3 import bases_for

    try:
        preset = probes_sized(preset, args, run_kwargs(args, RUN_FLAGS))
        bases = bases_for(preset, args.logdir, **run_kwargs(args, RUN_FLAGS))
    except (ConfigError, ValueError) as e:
        fail(PROG, e)
    return args, preset, bases


def probes_sized(preset, args, run_settings: dict):
    """The preset's probe sizes cut to the training set when the flags leave them at the
    preset's (with a note); sizes given as flags are checked as given."""
    from lrbs_tf.training.config import RunConfig

    lr, batch = preset.points[0]
    num_train = RunConfig(
        lr=lr, batch_size=batch, train_size=preset.train_size, **run_settings
    ).num_train
    changes = {}
    if args.probe_examples is None and preset.probe_examples > num_train:
        changes["probe_examples"] = num_train
    if args.probe_noise_examples is None and preset.noise_examples > num_train:
        changes["noise_examples"] = num_train
    if changes:
        logging.getLogger("lrbs_tf").warning(
            "probes on %s of the training set's %d examples (the preset's sizes exceed it)",
            " and ".join(f"{v} ({k.replace('_', ' ')})" for k, v in changes.items()),
            num_train,
        )
    return dataclasses.replace(preset, **changes)


def preset_of(args):
    """The chosen preset with what the flags change in it."""
    changes = {}
    lrs = None if args.lrs is None else _numbers(args.lrs, "--lrs")
    batches = None if args.batch_sizes is None else _numbers(args.batch_sizes, "--batch-sizes", int)
    if (lrs is None) != (batches is None):
        fail(PROG, "--lrs and --batch-sizes go together (their grid replaces the preset's points)")
    if lrs is not None:
        changes["points"] = grid(lrs, batches)
    if args.seeds is not None:
        changes["seeds"] = _numbers(args.seeds, "--seeds", int)
    for flag, key in (
        ("epochs", "epochs"),
        ("loss_target", "loss_target"),
        ("train_size", "train_size"),
        ("probe_examples", "probe_examples"),
        ("probe_noise_examples", "noise_examples"),
    ):
        if getattr(args, flag) is not None:
            changes[key] = getattr(args, flag)
    if args.no_loss_target:
        changes["loss_target"] = None
    return dataclasses.replace(PRESETS[args.preset], **changes)


@command(PROG)
def main(argv=None):
    args, preset, bases = parse(argv)
    quiet_tensorflow()
    split_cpu_now(PROG, args)
    from lrbs_tf.figures import fig3
    from lrbs_tf.sweeps import tuning

    os.makedirs(args.logdir, exist_ok=True)
    if tuning.distributed_role() not in (None, "chief"):
        with reported_errors(PROG, args.logdir):
            try:
                tuning.wait_for_chief(args.connect_timeout)
            except ConnectionError as e:
                fail(PROG, e)
    with reported_errors(PROG, args.logdir):
        out = fig3.run(
            preset,
            bases,
            args.logdir,
            say=say,
            max_minutes=args.max_minutes,
            progress="bar" if args.verbose else "epoch",
        )
    if out is None:
        return 0
    print()
    print(summary(out))
    return 0


RUN_COLUMNS = (
    "η",
    "S",
    "η/S",
    "seed",
    "status",
    "epochs",
    "loss@w",
    "acc@w",
    "val acc",
    "λ_max",
    "‖H‖_F",
    "Tr H",
    "‖H‖_F fd (ε)",
)


def run_cells(r: dict) -> list:
    """One run's row of the table (:data:`RUN_COLUMNS`)."""
    return [
        f"{r['lr']:g}",
        r["batch_size"],
        f"{r['ratio']:.2e}",
        r["seed"],
        r["status"] + ("" if r["converged"] is not False else " (capped)"),
        r["epochs"],
        _f(r["final_weights_loss"], 3),
        _f(r["final_weights_accuracy"], 4),
        _f(r["validation_accuracy"], 4),
        _f(r["lambda_max"], 4)
        + ("" if r.get("lambda_max_stderr") is None else f" ± {_f(r['lambda_max_stderr'], 2)}"),
        _f(r["frobenius"], 4),
        _f(r["trace"], 4),
        "-" if r["frobenius_fd"] is None else f"{r['frobenius_fd']:.4g} ({r['fd_eps']:g})",
    ]


def summary(out: dict) -> str:
    """The table, the correlations and the headline numbers, as printed."""
    target, counts = out["loss_target"], out["counts"]
    lines = [format_table(RUN_COLUMNS, [run_cells(r) for r in out["runs"]]), ""]
    if target is not None:
        lines.append(
            f"runs: {counts['runs']}; at the loss target {target:g}: "
            f"{counts['counted']}; capped (hollow, not in ρ): {counts['capped']}; "
            f"diverged: {counts['diverged']}; missing: {counts['missing']}"
        )
    else:
        lines.append(
            f"runs: {counts['runs']} (no loss target: every finished run counts); "
            f"diverged: {counts['diverged']}; missing: {counts['missing']}"
        )
    if counts.get("b_simple_bounds"):
        lines.append(
            f"B_simple is a lower bound (‖g‖² not significantly above 0) in "
            f"{counts['b_simple_bounds']} of {counts['runs']} runs (fig3.csv: b_simple_kind)"
        )
    lines.append("Spearman correlation with η/S over the counted runs:")
    for key, label in QUANTITIES + (("final_weights_loss", "training-set loss at weights"),):
        c = out["spearman_vs_ratio"][key]
        lines.append(f"  {label:30s} {_f(c['rho'], 2):>6} (p {_f(c['p'], 2)}, n {c['n']})")
    lines.append(
        f"λ_max spans {_f(out['lambda_max_decades'], 2)} decades over "
        f"{_f(out['ratio_decades'], 2)} decades of η/S; final-weights losses within "
        f"a factor {_f(out['final_weights_loss_spread'], 3)}"
    )
    lines += [
        f"wrote {out['png']}",
        f"      {out['csv']}",
        f"view  tensorboard --logdir {os.path.dirname(out['png'])}   (HParams tab)",
        f"time  {out['wall_time'] / 60:.1f} min",
    ]
    return "\n".join(lines)


def _f(value, digits=4):
    return "-" if value is None else f"{value:.{digits}g}"
