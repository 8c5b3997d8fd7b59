"""Paper Fig. 3: a grid of η × S on the Fashion-MNIST MLP, with curvature at every point.

    python experiments/fig3_grid.py --preset quick      # 3 η × 3 S, loss target, 2 cores
    python experiments/fig3_grid.py --preset paper      # 7 η × 9 S, 200 epochs, 3 seeds

The grid runs as a keras-tuner GridSearch over :class:`lrbs_tf.tuning.RatioHyperModel`; every
point is an ordinary run folder under ``--logdir``. At the end of every run: λ_max (Lanczos),
‖H‖_F (Hutchinson, and the paper's finite-difference estimator), Tr H, B_simple, validation and
test accuracy, training loss. With ``--loss-target`` a run stops at the first epoch whose mean
training loss is at most the target (capped at ``--epochs``), so minima of equal training loss
are compared, as the paper's argument needs; runs that missed the target are drawn hollow.

Outputs in ``--logdir``: ``fig3.csv``/``fig3.json`` (one row per run), ``fig3.png`` (each
quantity against η/S, log axes, colour = S), Spearman correlations with η/S (printed and in
``fig3.json``), and the TensorBoard HParams dashboard (``tensorboard --logdir <logdir>``).
Rerunning the same command reuses finished runs and resumes killed ones. In keras-tuner's
distributed mode (``KERASTUNER_*`` variables; see ``tools/launch_tuner.py``) the chief hands
out grid points and writes the table; the workers train.

Quick preset (η ∈ {0.01, 0.03, 0.1} × S ∈ {50, 250, 1000}, loss target 0.35, at most 40
epochs, probes on 2000 examples), measured on 2 CPU cores: 6.5 minutes; every run reached the
target (2-22 epochs). Spearman correlation with η/S: λ_max −0.77, ‖H‖_F −0.92 (finite
differences −0.88), Tr H −0.98, validation accuracy +0.70, test accuracy +0.65 — the paper's
trend: higher η/S, wider minima, better generalisation. The paper preset (63 runs × 3 seeds ×
200 epochs) is GPU-sized.
"""
from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from lrbs_tf.cli import (ArgumentParser, add_distribute_flags, distribute_kwargs,  # noqa: E402
                         fail, format_table, quiet_tensorflow, refuse_multiworker_sweep,
                         reported_errors, split_cpu_now)
from lrbs_tf.config import ConfigError, ProbeSettings, RunConfig  # noqa: E402

PROG = "fig3_grid.py"
PRESETS = {
    "quick": dict(lrs=(0.01, 0.03, 0.1), batches=(50, 250, 1000), epochs=40, loss_target=0.35,
                  seeds=(0,), probe_examples=2000, noise_examples=500),
    "paper": dict(lrs=(0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.1),
                  batches=(25, 50, 100, 250, 400, 500, 700, 800, 1000), epochs=200,
                  loss_target=None, seeds=(0, 1, 2), probe_examples=5000, noise_examples=1000),
}
QUANTITIES = [("lambda_max", "λ_max", True), ("frobenius", "‖H‖_F (Hutchinson)", True),
              ("frobenius_fd", "‖H‖_F (finite differences)", True), ("trace", "Tr H", True),
              ("validation_accuracy", "validation accuracy", False),
              ("test_accuracy", "test accuracy", False)]


def parse(argv):
    p = ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", choices=sorted(PRESETS), default="quick")
    p.add_argument("--lrs", help="comma-separated η values (override the preset)")
    p.add_argument("--batch-sizes", help="comma-separated S values (override the preset)")
    p.add_argument("--epochs", type=int, help="epochs, the cap with --loss-target")
    p.add_argument("--loss-target", type=float, help="stop runs at this training loss")
    p.add_argument("--no-loss-target", action="store_true")
    p.add_argument("--seeds", help="comma-separated seeds")
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--train-size", type=int)
    p.add_argument("--validation-size", type=int, help="held out of the training set (default: 10000 Fashion-MNIST, 5000 CIFAR-10)")
    p.add_argument("--data-dir")
    p.add_argument("--probe-examples", type=int)
    p.add_argument("--probe-noise-examples", type=int)
    p.add_argument("--deterministic", action="store_true")
    p.add_argument("--logdir", default=None, help="default: runs/fig3-<preset>")
    p.add_argument("--connect-timeout", type=float, default=60,
                   help="distributed workers: seconds to wait for the chief")
    add_distribute_flags(p)
    args = p.parse_args(argv)
    refuse_multiworker_sweep(PROG, args)
    preset = dict(PRESETS[args.preset])
    try:
        if args.lrs:
            preset["lrs"] = tuple(float(v) for v in args.lrs.split(","))
        if args.batch_sizes:
            preset["batches"] = tuple(int(v) for v in args.batch_sizes.split(","))
        if args.seeds:
            preset["seeds"] = tuple(int(v) for v in args.seeds.split(","))
    except ValueError as e:
        fail(PROG, f"bad list: {e}")
    for key in ("epochs", "loss_target", "probe_examples"):
        if getattr(args, key) is not None:
            preset[key] = getattr(args, key)
    if args.probe_noise_examples is not None:
        preset["noise_examples"] = args.probe_noise_examples
    if args.no_loss_target:
        preset["loss_target"] = None
    args.logdir = args.logdir or f"runs/fig3-{args.preset}"
    try:
        if min(preset["lrs"]) <= 0 or min(preset["batches"]) <= 0:
            raise ConfigError("η and S values must be positive")
        probe = ProbeSettings(examples=preset["probe_examples"],
                              noise_examples=preset["noise_examples"])
        bases = []
        for seed in preset["seeds"]:
            base = RunConfig(lr=preset["lrs"][0], batch_size=max(preset["batches"]),
                             epochs=preset["epochs"], seed=seed, width=args.width,
                             train_size=args.train_size, validation_size=args.validation_size,
                             data_dir=args.data_dir, logdir=args.logdir, probe=probe,
                             loss_target=preset["loss_target"],
                             deterministic=args.deterministic, **distribute_kwargs(args))
            bases.append(base.validate())
    except (ConfigError, ValueError) as e:
        fail(PROG, e)
    return args, preset, bases


def main(argv=None):
    args, preset, bases = parse(argv)
    quiet_tensorflow()
    split_cpu_now(PROG, args)
    from lrbs_tf import runio, tuning
    from lrbs_tf.sweep import grid_table, plot_grid, spearman

    os.makedirs(args.logdir, exist_ok=True)
    role = tuning.distributed_role()
    if role not in (None, "chief"):
        with reported_errors(PROG, args.logdir):
            try:
                tuning.wait_for_chief(args.connect_timeout)
            except ConnectionError as e:
                fail(PROG, e)
    total = len(preset["lrs"]) * len(preset["batches"]) * len(bases)
    tick, done = time.time(), [0]

    def progress(config, results):
        done[0] += 1
        elapsed = time.time() - tick
        eta = elapsed / done[0] * (total - done[0])
        status = results["status"] + ("" if config.loss_target is None else
                                      f", target {'reached' if results.get('loss_target_reached') else 'missed'}")
        print(f"[grid {done[0]}/{total}] η={config.lr:g} S={config.batch_size} seed={config.seed}: "
              f"{status}, val acc {results.get('final_validation_accuracy', float('nan')):.4f}; "
              f"elapsed {elapsed / 60:.1f} min, ETA {eta / 60:.1f} min", flush=True)

    tuning.write_hparams_config(args.logdir)
    for base in bases:
        hypermodel = tuning.RatioHyperModel(base, space="grid", lrs=preset["lrs"],
                                            batch_sizes=preset["batches"],
                                            name_prefix="fig3", on_trial_end=progress)
        tuner = tuning.make_tuner(hypermodel, "grid", os.path.join(args.logdir, "keras_tuner"),
                                  f"seed{base.seed}",
                                  max_trials=len(preset["lrs"]) * len(preset["batches"]))
        with reported_errors(PROG, args.logdir):
            tuner.search(verbose=0)
    if role not in (None, "chief"):
        print(f"worker {role} done")
        return 0
    rows = grid_table(bases, preset["lrs"], preset["batches"])
    correlations = spearman(rows, [q for q, _, _ in QUANTITIES])
    png = plot_grid(rows, QUANTITIES, os.path.join(args.logdir, "fig3.png"),
                    title=f"Fig. 3 — MLP on Fashion-MNIST, {args.preset} preset"
                          + (f", loss target {preset['loss_target']}" if preset["loss_target"]
                             else ""))
    runio.write_csv(os.path.join(args.logdir, "fig3.csv"), rows, list(rows[0]))
    runio.write_json(os.path.join(args.logdir, "fig3.json"), {
        "preset": args.preset, "settings": {k: v for k, v in preset.items()},
        "runs": rows, "spearman_vs_ratio": correlations, "wall_time": time.time() - tick})
    print()
    print(format_table(["η", "S", "η/S", "seed", "status", "epochs", "train loss", "val acc",
                        "λ_max", "‖H‖_F", "‖H‖_F fd", "Tr H"],
                       [[r["lr"], r["batch_size"], f"{r['ratio']:.2e}", r["seed"],
                         r["status"] + ("" if r["reached_target"] in (None, True) else "*"),
                         r["epochs"], _f(r["train_loss"]), _f(r["validation_accuracy"]),
                         _f(r["lambda_max"], 4), _f(r["frobenius"], 4), _f(r["frobenius_fd"], 4),
                         _f(r["trace"], 4)] for r in rows]))
    if any(r["reached_target"] is False for r in rows):
        print("* did not reach the training-loss target")
    print("\nSpearman correlation with η/S (all finished runs | runs at the loss target):")
    for q, label, _ in QUANTITIES:
        c = correlations[q]
        print(f"  {label:30s} {_f(c['all']['rho'], 3):>7} (p {_f(c['all']['p'], 2)}, "
              f"n {c['all']['n']}) | {_f(c['at_target']['rho'], 3):>7} (n {c['at_target']['n']})")
    print(f"\nwrote {png}\n      {os.path.join(args.logdir, 'fig3.csv')}\n"
          f"view  tensorboard --logdir {args.logdir}   (HParams tab)\n"
          f"time  {(time.time() - tick) / 60:.1f} min")
    return 0


def _f(value, digits=4):
    if value is None:
        return "-"
    return f"{value:.{digits}g}"


if __name__ == "__main__":
    sys.exit(main())
