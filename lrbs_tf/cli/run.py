"""Train one model at a chosen learning-rate-to-batch-size ratio η/S.

    python experiments/run.py --ratio 0.005/640               # η = 0.005, S = 640
    python experiments/run.py --ratio 7.8125e-6 --batch-size 640
    python experiments/run.py --lr 0.1 --batch-size 100 --epochs 5
    python experiments/run.py --rescale linear --base 0.1/50 --batch-size 400   # η = 0.8
    python experiments/run.py --lr 0.005 --bs-schedule cyclic:640,128:4 --epochs 16
    python experiments/run.py --batch-size 128 --lr-schedule cyclic:0.001,0.005:4 --epochs 16
    python experiments/run.py --ratio 0.005/640 --strategy mirrored --devices /gpu:0,/gpu:1
    python tools/launch_workers.py -n 2 -- experiments/run.py --ratio 0.005/640

Schedules (``--lr-schedule``, ``--bs-schedule``, ``--ratio-schedule``) are written in epochs;
see ``lrbs_tf/core/schedules.py`` for the syntax. A batch-size schedule keeps η fixed unless
``--keep-ratio`` (then η = (η0/S0)·S(t)); ``--grow-batch`` turns a decaying η schedule into a
growing S with the same η/S. Under ``--strategy mirrored|multiworker`` S is the global batch
(summed over replicas and workers); see the README's "Several devices and machines".

Default: the paper's 4-layer batch-normalised MLP on Fashion-MNIST (50000 train / 10000
validation / 10000 test), 3 epochs. Repeating a command resumes a stopped run from its last
checkpoint (or just prints a finished run); Ctrl-C saves the state and exits with status 130.
Writes ``runs/<name>/`` with ``config.json``, ``results.json``, ``model.keras`` and TensorBoard
events (``tb/``).

Measured on 2 CPU cores: ``--ratio 0.005/640`` (3 epochs) takes 15 s in all and reaches 78.0 %
test accuracy; ``--ratio 0.1/100 --epochs 5`` 18 s and 87.3 %. ``--probe`` given no size,
error or time limit spends about as long as training did (``--probe-time-share``, at least
10 s) on at most 5000 examples.
"""

from __future__ import annotations

import os

from lrbs_tf.cli.common import (
    ArgumentParser,
    add_verbose_flag,
    command,
    fail,
    program,
    quiet_tensorflow,
    reported_errors,
    setup_logging,
    split_cpu_now,
)
from lrbs_tf.core.ratio import RatioError, parse_ratio, rescale_lr, resolve_ratio
from lrbs_tf.core.schedules import ScheduleError, Warmup, parse_schedule
from lrbs_tf.probes.settings import DEFAULT_TIME_SHARE, PROBE_GROUP, ProbeSettings
from lrbs_tf.settings import ConfigError, add_flags, values_from
from lrbs_tf.training.config import SCHEDULES, RunConfig

PROG = program("run.py")


def parse_args(argv=None) -> RunConfig:
    """The run's settings from the command line (exits with status 2 on a bad flag)."""
    return parse(argv)[0]


def parse(argv=None) -> tuple[RunConfig, bool]:
    """``(settings, verbose)`` from the command line."""
    p = ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    groups = {SCHEDULES: p.add_argument_group(SCHEDULES)}
    g = groups[SCHEDULES]
    g.add_argument("--ratio", help="LR/BATCH (e.g. 0.005/640), or a bare η/S with --batch-size")
    g.add_argument("--lr", help="learning rate η (with --batch-size)")
    g.add_argument("--batch-size", help="batch size S")
    g.add_argument("--rescale", help="move --base to --batch-size: linear, sqrt, none or a power p")
    g.add_argument("--base", help="base recipe LR/BATCH for --rescale, e.g. 0.1/50")
    groups[PROBE_GROUP] = p.add_argument_group(PROBE_GROUP)
    groups[PROBE_GROUP].add_argument(
        "--probe",
        action="store_true",
        help="measure curvature and gradient noise at the end of training",
    )
    names = add_flags(p, RunConfig, groups=groups)
    add_verbose_flag(p)
    probe_names = add_flags(p, ProbeSettings, prefix="probe-", groups=groups)
    args = p.parse_args(argv)
    try:
        ratio = base_ratio(
            args.ratio,
            args.lr,
            args.batch_size,
            args.rescale,
            args.base,
            args.lr_schedule,
            args.bs_schedule,
            args.ratio_schedule,
        )
        probe = (
            ProbeSettings(**values_from(args, probe_names, prefix="probe-"))
            if args.probe or args.probe_every
            else None
        )
        if probe is not None and not given(p, argv, *SIZED_BY, prefix="probe_"):
            probe.time_share = DEFAULT_TIME_SHARE  # about what training cost, not 80×
        config = RunConfig(
            lr=ratio.lr, batch_size=ratio.batch_size, probe=probe, **values_from(args, names)
        ).validate()
    except (RatioError, ConfigError) as e:
        fail(PROG, e)
    return config, args.verbose


# The flags that say how much to probe: given any, the probe is as the user sized it.
SIZED_BY = ("examples", "noise_examples", "rel_error", "max_seconds", "time_share")


def given(parser, argv, *names, prefix: str = "") -> bool:
    """Did the command line give any of the flags of ``names`` (their argparse dests after
    ``prefix``), even at its default value?"""
    dests, unset = [prefix + name for name in names], object()
    defaults = {dest: parser.get_default(dest) for dest in dests}
    parser.set_defaults(**dict.fromkeys(dests, unset))
    try:
        again = parser.parse_args(argv)
    finally:
        parser.set_defaults(**defaults)
    return any(getattr(again, dest) is not unset for dest in dests)


def check_user_model_now(config) -> None:
    """A user's builder or model file is built (or loaded) and checked before the run folder
    is claimed, so that a model that cannot train writes nothing (this loads TensorFlow)."""
    from lrbs_tf.models.sources import kind_of

    if kind_of(config.model) != "registered":
        quiet_tensorflow()
        split_cpu_now(PROG, config)
        from lrbs_tf.models.registry import check_user_model

        check_user_model(config)


def base_ratio(
    ratio=None,
    lr=None,
    batch_size=None,
    rescale=None,
    base=None,
    lr_schedule=None,
    bs_schedule=None,
    ratio_schedule=None,
):
    """The base η0/S0 of a run from its command-line flags.

    ``--rescale RULE --base η0/S0 --batch-size S`` moves a recipe to batch S. Otherwise the
    usual ``--ratio``/``--lr``/``--batch-size`` forms apply, and a schedule fills in what they
    leave out: S0 = S(0) of ``--bs-schedule``, η0 = η(0) of ``--lr-schedule``, or
    η0 = (η/S)(0)·S0 of ``--ratio-schedule``.
    """
    if rescale is not None or base is not None:
        if rescale is None or base is None or batch_size is None:
            raise RatioError("--rescale needs --base LR/BATCH and --batch-size")
        if ratio is not None or lr is not None:
            raise RatioError("--rescale computes η from --base: drop --ratio/--lr")
        return rescale_lr(parse_ratio(base), batch_size, rescale)

    def explicit(spec):  # does the schedule carry its own values (no empty BASE)?
        try:
            parse_schedule(spec)
            return True
        except ScheduleError:
            return False

    if lr_schedule and explicit(lr_schedule) and (lr is not None or ratio is not None):
        raise RatioError(
            "--lr-schedule already gives η: drop --lr/--ratio, or leave the "
            "schedule's BASE empty to take η0 from them"
        )
    if ratio_schedule and explicit(ratio_schedule) and (lr is not None or ratio is not None):
        raise RatioError(
            "--ratio-schedule already gives η/S: drop --lr/--ratio, or leave "
            "the schedule's BASE empty"
        )
    try:
        if batch_size is None and bs_schedule and (ratio is None or "/" not in str(ratio)):
            batch_size = max(1, round(parse_schedule(bs_schedule)(0.0)))
        if lr is None and ratio is None:
            if lr_schedule:
                lr = after_warmup(parse_schedule(lr_schedule))(0.0)
                if not lr > 0:
                    raise RatioError("the η schedule starts at 0: give the base η with --lr")
            elif ratio_schedule and batch_size is not None:
                ratio = repr(parse_schedule(ratio_schedule)(0.0))
    except ScheduleError as e:
        if "must be a" in str(e) and "''" in str(e):  # BASE left empty: needs --ratio/--lr
            raise RatioError("the schedule leaves BASE empty: give --ratio or --lr") from None
        raise RatioError(str(e)) from None
    return resolve_ratio(ratio, lr, batch_size)


def after_warmup(schedule):
    """The schedule a warm-up leads into (``warmup:E:INNER`` → INNER, nested ones too): its
    value at 0 is the base η of the run."""
    while isinstance(schedule, Warmup):
        schedule = schedule.inner
    return schedule


def summary(results: dict, config: RunConfig) -> str:
    """What the run did, as printed at its end."""
    lines = [
        "",
        f"run        {config.run_name}",
        ratio_line(results, config),
        *model_lines(results.get("model"), config),
        f"data       {results.get('data_source') or config.dataset}"
        + ("  [SYNTHETIC: not real data]" if results.get("synthetic_data") else ""),
        f"status     {results['status']}"
        + (
            f" (non-finite loss in epoch {results['diverged_epoch']})"
            if results["diverged"]
            else ""
        ),
    ]
    lines += accuracy_lines(results)
    if results.get("measured_model"):
        lines.append(f"warning    {results['measured_model']}")
    lines += speed_lines(results)
    lines += probe_lines(results.get("probe"), (results.get("model") or {}).get("batchnorm", True))
    lines += where_lines(results, config)
    return "\n".join(lines)


def ratio_line(results: dict, config: RunConfig) -> str:
    """η/S as it ran: ``η/S 0.1/100 = 0.001``; with schedules, the range of η/S, S and η over
    the epochs' steps (a ragged last batch aside), the start and the schedules."""
    from lrbs_tf.training.results import ranges_run

    start = f"{config.lr:g}/{config.batch_size} = {config.ratio:.6g}"
    if not (config.lr_schedule or config.bs_schedule or config.ratio_schedule):
        return f"η/S        {start}"
    ran = ranges_run(results.get("epochs", []))
    schedules = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in config.plan().describe().items())
    if not ran:
        return f"η/S        {start} at the start; {schedules}"

    def span(key, form):
        low, high = ran[key]
        return form.format(low) if low == high else f"{form.format(low)} to {form.format(high)}"

    return (
        f"η/S        {span('ratio', '{:.6g}')} (S {span('batch_size', '{:d}')}, η "
        f"{span('lr', '{:.6g}')}) over the run, {start} at the start; {schedules}"
    )


def speed_lines(results: dict) -> list[str]:
    """Examples per second of the training steps (evaluations and probes aside), and where the
    run's time went."""
    if not results.get("examples_per_second"):
        return []
    probes = sum(p.get("seconds", 0.0) for p in results.get("probe_history") or [])
    if results.get("probe") and "after_epoch" not in results["probe"]:  # not a streaming one
        probes += results["probe"].get("seconds", 0.0)
    return [
        f"speed      {results['examples_per_second']:,.0f} examples/s over "
        f"{results['train_time']:.1f} s of training steps; {results['wall_time']:.1f} s in all"
        + (f", {probes:.1f} s of them probes" if probes else "")
    ]


def model_lines(model: dict | None, config: RunConfig) -> list[str]:
    """The model as built: its parameters and the options the run passed to it."""
    if not model:
        return []
    options = ", ".join(f"{k}={v}" for k, v in model["options"].items())
    return [
        f"model      {config.model}: {model['parameters']:,} parameters "
        + (f"(options {options})" if options else "(the builder's own defaults)")
    ]


def accuracy_lines(results: dict) -> list[str]:
    if results.get("final_test_accuracy") is None:
        return []
    return [
        f"test acc   {results['final_test_accuracy']:.4f} final, "
        f"{results['test_accuracy_at_best']:.4f} at best validation epoch "
        f"{results['best_epoch']}",
        f"val acc    {results['final_validation_accuracy']:.4f} final, "
        f"{results['best_validation_accuracy']:.4f} best",
        f"train loss {results['final_train_loss']:.4f} (running mean of the last epoch)"
        + (
            f"; {results['final_weights_loss']:.4f} over the training set at the final weights"
            if results.get("final_weights_loss") is not None
            else ""
        ),
    ]


def probe_lines(probe: dict | None, batchnorm: bool = True) -> list[str]:
    """The final probe, each figure with its standard error (over the choice of examples and
    the estimator's random vectors; :mod:`lrbs_tf.probes.sampling`)."""
    if not probe:
        return []
    from lrbs_tf.probes.sampling import text

    mode = " (BatchNorm inference)" if batchnorm else ""
    fd = f" ({fd_text(probe)})" if "frobenius_fd" in probe else ""
    step = ""
    if "step_sharpness" in probe and "stability_2_over_lr" in probe:
        where = "BatchNorm over batches of" if batchnorm else "S ="
        step = (
            f"; step {text(probe, 'step_sharpness')} ({where} {probe['step_batch_size']}) "
            f"against 2/η = {probe['stability_2_over_lr']:.4g}"
        )
    return [
        f"sharpness  width {text(probe, 'lambda_max')}{mode}{step}",
        f"curvature  Tr H {text(probe, 'trace')}, ‖H‖_F {text(probe, 'frobenius')}{fd}",
        f"noise      Tr C {text(probe, 'trace_c')}, |g|² {text(probe, 'grad_norm_sq', 3)}, "
        f"B_simple {text(probe, 'b_simple')} (on {probe['noise_num_examples']} examples); "
        f"± over the probe examples ({probe.get('sampling_groups', '?')} groups) and the "
        f"estimators; the final probe took {probe['seconds']:.0f} s",
        *budget_lines(probe),
    ]


def budget_lines(probe: dict) -> list[str]:
    """What a probe limited by a share of the training time left out (nothing otherwise)."""
    budget = probe.get("budget") or {}
    if not budget.get("time_share") or budget.get("stopped_by") != "the time limit":
        return []
    light = " (a light pass: a third of the trace and ‖H‖_F samples)" if budget.get("light") else ""
    return [
        f"           on {budget['passes'][-1]['examples']} examples{light}, as many as "
        f"{budget['time_share']:g} × the training time allowed ({budget['max_seconds']:.0f} s); "
        "tools/probe.py on the run folder with --examples N measures it on N"
    ]


def fd_text(probe: dict) -> str:
    """The paper's finite-difference ‖H‖_F with its error, and a word when its step error is
    a large part of it (the step crosses ReLU kinks: not the Hessian's norm)."""
    from lrbs_tf.probes.sampling import text

    out = f"paper's finite differences {text(probe, 'frobenius_fd')} at ε = {probe['fd_eps']:g}"
    step = probe.get("frobenius_fd_step_error")
    if step is not None and step > 0.1 * probe["frobenius_fd"]:
        out += f"; its step error {step:.3g} is over 10 %: trust the Hutchinson figure"
    return out


def where_lines(results: dict, config: RunConfig) -> list[str]:
    """The devices (several replicas) and the run folder (the chief's)."""
    lines, run_dir = [], results["run_dir"]
    where = results.get("distribute")
    if where and where["replicas"] > 1:
        lines.append(
            f"devices    {where['strategy']}, {where['replicas']} replicas"
            + (f", task {where['task']}" if "task" in where else "")
            + f"; weights sha1 {results['weights_sha1'][:16]}"
        )
    if results.get("chief", True):
        lines += [
            f"folder     {run_dir}",
            f"view       tensorboard --logdir {os.path.join(run_dir, 'tb')}",
        ]
    else:
        lines.append(f"folder     written by the chief: {config.run_dir}")
    return lines


@command(PROG)
def main(argv=None) -> int:
    config, verbose = parse(argv)
    setup_logging(verbose)
    from lrbs_tf.distribute.cluster import chief_task
    from lrbs_tf.training.folder import RunFolder

    with reported_errors(PROG, config.logdir):
        check_user_model_now(config)
        # The run folder is checked and locked before TensorFlow loads, so that a busy,
        # damaged or foreign folder is refused at once (train() takes the same lock again).
        if config.strategy != "multiworker" or chief_task():
            RunFolder.claim(config, reserve=False)
        else:
            RunFolder.look(config)
    quiet_tensorflow()
    from lrbs_tf.training.run import train

    with reported_errors(PROG, config.logdir):
        results = train(config, progress="bar" if verbose else "epoch")
    print(summary(results, config))
    return 0
