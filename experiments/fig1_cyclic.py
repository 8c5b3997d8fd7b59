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

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from lrbs_tf.cli import (ArgumentParser, add_run_flags, fail, format_table,  # noqa: E402
                         percent, quiet_tensorflow, run_all, run_kwargs)
from lrbs_tf.config import ConfigError, RunConfig  # noqa: E402
from lrbs_tf.ratio import RatioError  # noqa: E402

PROG = "fig1_cyclic.py"
SETTINGS = [  # name, base η, base S, schedules, pair
    ("CBS 640↔128, η=0.005", 0.005, 640, dict(bs_schedule="cyclic:640,128:{stage}"), "cyclic"),
    ("CLR 0.001↔0.005, S=128", 0.001, 128, dict(lr_schedule="cyclic:0.001,0.005:{stage}"),
     "cyclic"),
    ("constant 0.001/128", 0.001, 128, {}, "constant"),
    ("constant 0.005/640", 0.005, 640, {}, "constant"),
]


def configs(args):
    out = []
    for label, lr, batch, schedules, pair in SETTINGS:
        sched = {k: v.format(stage=args.stage) for k, v in schedules.items()}
        name = f"fig1-{pair}-{'cbs' if 'bs_schedule' in sched else 'clr' if sched else 'const'}" \
               f"-lr{lr:g}-bs{batch}-seed{args.seed}"
        config = RunConfig(lr=lr, batch_size=batch, name=name, **sched, **run_kwargs(args))
        out.append((label, pair, config.validate()))
    return out


def main(argv=None):
    p = ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    add_run_flags(p, epochs=24, logdir="runs/fig1")
    p.add_argument("--stage", type=float, default=4, help="stage length in epochs")
    args = p.parse_args(argv)
    try:
        if args.stage <= 0:
            raise ConfigError(f"--stage must be positive, got {args.stage}")
        runs = configs(args)
    except (ConfigError, RatioError) as e:
        fail(PROG, e)
    quiet_tensorflow()
    from lrbs_tf import runio
    from lrbs_tf.experiment import curve_distance, sde_time
    from lrbs_tf.plots import learning_curve_panels

    results = run_all(PROG, args.logdir, [(label, config) for label, _, config in runs],
                      report=_say)
    table = []
    for (label, pair, config), r in zip(runs, results):
        table.append({"setting": label, "pair": pair, "ratio_start": config.plan().ratio_at(0),
                      "best_test_accuracy": r.get("best_test_accuracy"),
                      "final_test_accuracy": r.get("final_test_accuracy"),
                      "status": r["status"], "run_dir": r["run_dir"]})
    names = [label for label, _, _ in runs]
    distances = {}
    for key in ("test_accuracy", "train_accuracy"):
        distances[key] = {f"{names[i]} | {names[j]}": curve_distance(results[i], results[j], key)
                          for i in range(len(runs)) for j in range(i + 1, len(runs))}
    within = [distances["test_accuracy"][f"{names[0]} | {names[1]}"],
              distances["test_accuracy"][f"{names[2]} | {names[3]}"]]
    across = [distances["test_accuracy"][f"{names[i]} | {names[j]}"]
              for i in (0, 1) for j in (2, 3)]
    verdict = max(within) < min(across)

    panels = [("cyclic: CBS vs CLR (same η/S every step)",
               [(label, r, c) for (label, pair, c), r in zip(runs, results) if pair == "cyclic"]),
              ("constant: 0.001/128 vs 0.005/640",
               [(label, r, c) for (label, pair, c), r in zip(runs, results) if pair == "constant"])]
    png = learning_curve_panels(panels, os.path.join(args.logdir, "fig1.png"),
                                f"Fig. 1 — {args.model} on {args.dataset}: dynamics depend on η/S")
    num_train = RunConfig(lr=1, batch_size=1, **run_kwargs(args)).num_train
    png_sde = learning_curve_panels(
        panels, os.path.join(args.logdir, "fig1_sde_time.png"),
        "Fig. 1 against SDE time (Σ η over steps)", x_of=lambda r, c: sde_time(c, num_train),
        xlabel="SDE time Σ η")
    report = {"runs": table, "curve_distances": distances, "within_pair": within,
              "across_pairs": across, "pairs_closer_than_across": verdict}
    runio.write_json(os.path.join(args.logdir, "fig1.json"), report)
    runio.write_csv(os.path.join(args.logdir, "fig1.csv"), table,
                    ["setting", "pair", "ratio_start", "best_test_accuracy",
                     "final_test_accuracy", "status", "run_dir"])

    print()
    print(format_table(["setting", "η/S at start", "best test acc", "final test acc", "status"],
                       [[r["setting"], f"{r['ratio_start']:.3g}", percent(r["best_test_accuracy"]),
                         percent(r["final_test_accuracy"]), r["status"]] for r in table]))
    print("\ncurve distance = mean |Δ test accuracy| over epochs")
    print(format_table(["pair of runs", "test", "train"],
                       [[k, f"{v:.4f}", f"{distances['train_accuracy'][k]:.4f}"]
                        for k, v in distances["test_accuracy"].items()]))
    print(f"\nwithin pairs {', '.join(f'{d:.4f}' for d in within)}; across pairs "
          f"{', '.join(f'{d:.4f}' for d in across)}: "
          f"{'each pair is closer to itself than to the other pair' if verdict else 'NOT every pair is closer to itself than across pairs'}")
    print(f"\nwrote {png}\n      {png_sde}\n      {os.path.join(args.logdir, 'fig1.csv')}")
    return 0


def _say(message):
    print(message, flush=True)


if __name__ == "__main__":
    sys.exit(main())
