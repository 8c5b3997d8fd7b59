"""Search η/S with keras-tuner: random, Bayesian or Hyperband, with a budget.

    python experiments/tune.py --algorithm random --trials 8 --epochs 3
    python experiments/tune.py --algorithm bayesian --trials 20 --ratio-range 1e-6,1e-3 \
        --batch-sizes 32,128,512 --probe
    python experiments/tune.py --algorithm hyperband --epochs 9 --space lr_batch

The search space is η/S on a log scale with the batch size chosen from ``--batch-sizes``
(``--space ratio``), or η on a log scale with the batch size (``--space lr_batch``); η always
reaches the optimizer through the ratio-scaled wrapper, and each trial is an ordinary run folder
under ``--logdir`` (rerunning the command reuses finished trials). The objective is the final
validation accuracy. Writes ``tune.csv``/``tune.json`` (all trials, best first) and
``best.json`` (the best configuration), and HParams sessions for TensorBoard
(``tensorboard --logdir <logdir>``, HParams tab). Works in keras-tuner's distributed mode
(``tools/launch_tuner.py``).

Measured on 2 CPU cores: ``--algorithm random --trials 8 --epochs 3`` with the defaults takes
1.3 minutes; the best trial was η/S = 0.124/128 (9.7e-4) at 88.2 % validation accuracy.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time

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
    seconds,
    setup_logging,
    split_cpu_now,
)
from lrbs_tf.probes.settings import ProbeSettings
from lrbs_tf.settings import ConfigError
from lrbs_tf.sweeps import LR_RANGE, RATIO_RANGE
from lrbs_tf.training.config import RunConfig

PROG = program("tune.py")
DEFAULT_BATCH_SIZES = "32,128,512"
PROBE_EXAMPLES, NOISE_EXAMPLES = 2000, 500
RUN_FLAGS = (
    "epochs",
    "seed",
    "model",
    "width",
    "dataset",
    "train_size",
    "validation_size",
    "data_dir",
    "logdir",
) + DEVICES


def _floats(text, what, count=None):
    """Comma-separated positive finite numbers (``count`` of them, increasing, for a range)."""
    import math

    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        fail(PROG, f"{what} must be comma-separated numbers, got {text!r}")
    if (count and len(values) != count) or not all(0 < v < math.inf for v in values):
        fail(PROG, f"{what} must be {count or 'some'} positive finite numbers, got {text!r}")
    if count == 2 and not values[0] < values[1]:
        fail(PROG, f"{what} must be LOW,HIGH with LOW < HIGH, got {text!r}")
    return values


def parser() -> ArgumentParser:
    """The command's flags."""
    p = ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--algorithm",
        choices=("random", "bayesian", "hyperband"),
        default="random",
        help="keras-tuner's search (default: random)",
    )
    p.add_argument(
        "--space",
        choices=("ratio", "lr_batch"),
        default="ratio",
        help="ratio: η/S log-uniform in --ratio-range and S from --batch-sizes; lr_batch: η "
        "log-uniform in --lr-range and S from --batch-sizes (default: ratio)",
    )
    p.add_argument("--trials", type=int, default=8, help="budget (random, bayesian; default 8)")
    p.add_argument(
        "--ratio-range",
        default="{:g},{:g}".format(*RATIO_RANGE),
        metavar="LOW,HIGH",
        help=f"η/S range of --space ratio (default: {RATIO_RANGE[0]:g},{RATIO_RANGE[1]:g})",
    )
    p.add_argument(
        "--lr-range",
        default="{:g},{:g}".format(*LR_RANGE),
        metavar="LOW,HIGH",
        help=f"η range of --space lr_batch (default: {LR_RANGE[0]:g},{LR_RANGE[1]:g})",
    )
    p.add_argument(
        "--batch-sizes",
        default=None,
        metavar="S,S,…",
        help=f"the batch sizes S to choose from (default: {DEFAULT_BATCH_SIZES}, those at most "
        "the training set's size)",
    )
    add_run_flags(p, epochs=3, logdir="runs/tune", names=RUN_FLAGS)
    add_probe_flags(p)
    p.add_argument(
        "--connect-timeout",
        type=seconds,
        default=60,
        metavar="SECONDS",
        help="distributed workers: seconds to wait for the chief (default: 60)",
    )
    add_verbose_flag(p)
    return p


def add_probe_flags(p) -> None:
    """``--probe`` and the probes' sizes."""
    probes = p.add_argument_group("curvature probes")
    probes.add_argument(
        "--probe", action="store_true", help="record λ_max, ‖H‖_F, B_simple per trial"
    )
    probes.add_argument(
        "--probe-examples",
        type=int,
        metavar="N",
        help=f"examples of the curvature probes (default: {PROBE_EXAMPLES}, at most the "
        "training set)",
    )
    probes.add_argument(
        "--probe-noise-examples",
        type=int,
        metavar="N",
        help=f"examples of the gradient-noise probe (default: {NOISE_EXAMPLES}, at most "
        "--probe-examples)",
    )


def parse(argv):
    """The flags, checked: ``(args, base RunConfig, η/S range, η range, batch sizes)``."""
    args = parser().parse_args(argv)
    setup_logging(args.verbose)
    refuse_multiworker_sweep(PROG, args)
    ratio_range = _floats(args.ratio_range, "--ratio-range", 2)
    lr_range = _floats(args.lr_range, "--lr-range", 2)
    batch_sizes = _floats(args.batch_sizes or DEFAULT_BATCH_SIZES, "--batch-sizes")
    if any(b != int(b) for b in batch_sizes):
        fail(PROG, f"--batch-sizes must be whole numbers, got {args.batch_sizes!r}")
    batch_sizes = tuple(int(b) for b in batch_sizes)
    if args.trials < 1:
        fail(PROG, f"--trials must be at least 1, got {args.trials}")
    try:
        base = RunConfig(lr=lr_range[0], batch_size=1, **run_kwargs(args, RUN_FLAGS))
        if args.batch_sizes is None:
            batch_sizes = default_batch_sizes(base.num_train)
        probe = probe_settings(args, base.num_train) if args.probe else None
        base = dataclasses.replace(base, batch_size=max(batch_sizes), probe=probe).validate()
    except (ConfigError, ValueError) as e:
        fail(PROG, e)
    return args, base, ratio_range, lr_range, batch_sizes


def default_batch_sizes(num_train: int) -> tuple:
    """The default batch sizes that fit a training set of ``num_train`` (a note when some
    do not)."""
    sizes = tuple(int(b) for b in DEFAULT_BATCH_SIZES.split(","))
    kept = tuple(b for b in sizes if b <= num_train) or (num_train,)
    if kept != sizes:
        logging.getLogger("lrbs_tf").warning(
            "--batch-sizes: %s (the defaults up to the training set's %d examples)",
            ",".join(map(str, kept)),
            num_train,
        )
    return kept


def probe_settings(args, num_train: int) -> ProbeSettings:
    """The probes of every trial: the flags' sizes, or the defaults cut to the training set
    (with a note)."""
    examples, noise = args.probe_examples, args.probe_noise_examples
    if examples is None:
        examples = min(PROBE_EXAMPLES, num_train)
        if examples < PROBE_EXAMPLES:
            logging.getLogger("lrbs_tf").warning(
                "--probe-examples: %d (the training set's size; the default is %d)",
                examples,
                PROBE_EXAMPLES,
            )
    if noise is None:
        noise = min(NOISE_EXAMPLES, examples)
    return ProbeSettings(examples=examples, noise_examples=noise)


@command(PROG)
def main(argv=None):
    args, base, ratio_range, lr_range, batch_sizes = parse(argv)
    quiet_tensorflow()
    split_cpu_now(PROG, args)
    from lrbs_tf.sweeps import tuning
    from lrbs_tf.sweeps.hparams import write_hparams_config

    os.makedirs(args.logdir, exist_ok=True)
    if tuning.distributed_role() not in (None, "chief"):
        try:
            tuning.wait_for_chief(args.connect_timeout)
        except ConnectionError as e:
            fail(PROG, e)
    tick = time.time()

    def progress(config, results):
        logging.getLogger("lrbs_tf").info(
            "[trial] η=%.4g S=%d η/S=%.3g: %s, val acc %.4f (%.1f min)",
            config.lr,
            config.batch_size,
            config.ratio,
            results["status"],
            results.get("final_validation_accuracy", 0),
            (time.time() - tick) / 60,
        )

    hypermodel = tuning.RatioHyperModel(
        base,
        space=args.space,
        ratio_range=ratio_range,
        lr_range=lr_range,
        batch_sizes=batch_sizes,
        name_prefix="tune",
        on_trial_end=progress,
        progress="bar" if args.verbose else "epoch",
    )
    with reported_errors(PROG, args.logdir):
        tuner = tuning.make_tuner(
            hypermodel,
            args.algorithm,
            os.path.join(args.logdir, "keras_tuner"),
            f"{args.algorithm}-{args.space}",
            max_trials=args.trials,
            seed=args.seed,
            max_epochs=args.epochs,
        )
        write_hparams_config(args.logdir)
        tuner.search(verbose=0)
    if tuning.distributed_role() not in (None, "chief"):
        return 0
    rows = trial_rows(tuner, hypermodel)
    if not rows:
        fail(PROG, "no trial finished", status=1)
    write_tables(args.logdir, rows, time.time() - tick)
    show(rows, args.logdir, time.time() - tick)
    return 0


def trial_rows(tuner, hypermodel) -> list[dict]:
    """Every trial's row (its run's results), best first."""
    from lrbs_tf.sweeps.tables import row_of
    from lrbs_tf.training.folder import RunFolderError, read_json

    rows = []
    for trial in tuner.oracle.get_best_trials(len(tuner.oracle.trials)):
        epochs = trial.hyperparameters.values.get("tuner/epochs")
        config = hypermodel.config_for(trial.hyperparameters, epochs)
        try:
            results = read_json(os.path.join(config.run_dir, "results.json"))
        except RunFolderError:
            results = None
        rows.append(dict(row_of(config, results), trial_id=trial.trial_id, objective=trial.score))
    return rows


def write_tables(logdir: str, rows: list[dict], seconds: float) -> None:
    """``tune.csv``, ``tune.json`` (every trial, best first) and ``best.json``."""
    from lrbs_tf import files

    files.write_csv(os.path.join(logdir, "tune.csv"), rows, list(rows[0]))
    files.write_json(os.path.join(logdir, "tune.json"), {"trials": rows, "wall_time": seconds})
    files.write_json(os.path.join(logdir, "best.json"), rows[0])


def show(rows: list[dict], logdir: str, seconds: float) -> None:
    print()
    print(
        format_table(
            ["trial", "η", "S", "η/S", "status", "val acc", "test acc", "λ_max"],
            [
                [
                    r["trial_id"],
                    f"{r['lr']:.4g}",
                    r["batch_size"],
                    f"{r['ratio']:.3g}",
                    r["status"],
                    _f(r["validation_accuracy"]),
                    _f(r["test_accuracy"]),
                    _f(r["lambda_max"]),
                ]
                for r in rows
            ],
        )
    )
    best = rows[0]
    print(
        f"\nbest: η/S = {best['lr']:.4g}/{best['batch_size']} = {best['ratio']:.3g}, "
        f"val acc {_f(best['validation_accuracy'])}\nwrote {os.path.join(logdir, 'best.json')}"
        f"\nview  tensorboard --logdir {logdir}   (HParams tab)\n"
        f"time  {seconds / 60:.1f} min"
    )


def _f(value):
    return "-" if value is None else f"{value:.4g}"
