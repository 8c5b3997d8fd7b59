"""Paper Fig. 1: a cyclic batch size (CBS) matches a cyclic learning rate (CLR) of equal η/S.

Four runs, square waves starting in the low-noise stage: CBS S 640↔128 at η = 0.005, CLR
η 0.001↔0.005 at S = 128, and constant 0.001/128 and 0.005/640. Both pairs have the same η/S at
every step (7.8e-6 ↔ 3.9e-5, and 7.8e-6): if SGD's dynamics depend on η/S only, each pair's
learning curves coincide per epoch (per data point), and differ across pairs.
"""

from __future__ import annotations

import os

from lrbs_tf.figures import curves
from lrbs_tf.figures.runs import is_chief, train_all
from lrbs_tf.training.config import RunConfig

SETTINGS = [  # name, base η, base S, schedules, pair
    ("CBS 640↔128, η=0.005", 0.005, 640, dict(bs_schedule="cyclic:640,128:{stage}"), "cyclic"),
    (
        "CLR 0.001↔0.005, S=128",
        0.001,
        128,
        dict(lr_schedule="cyclic:0.001,0.005:{stage}"),
        "cyclic",
    ),
    ("constant 0.001/128", 0.001, 128, {}, "constant"),
    ("constant 0.005/640", 0.005, 640, {}, "constant"),
]


def configs(stage: float, **run_settings) -> list[tuple]:
    """``(label, pair, config)`` of the four runs, validated."""
    out = []
    for label, lr, batch, schedules, pair in SETTINGS:
        sched = {k: v.format(stage=stage) for k, v in schedules.items()}
        kind = "cbs" if "bs_schedule" in sched else "clr" if sched else "const"
        name = f"fig1-{pair}-{kind}-lr{lr:g}-bs{batch}-seed{run_settings.get('seed', 0)}"
        out.append(
            (
                label,
                pair,
                RunConfig(lr=lr, batch_size=batch, name=name, **sched, **run_settings).validate(),
            )
        )
    return out


def run(
    runs: list[tuple], logdir: str, say=lambda line: None, progress: str = "epoch"
) -> dict | None:
    """Train (or reuse) the runs, compare their curves, draw and write; returns the report
    (None in a multi-worker process that is not the chief)."""
    from lrbs_tf import files

    results = train_all([(label, config) for label, _, config in runs], say, progress)
    if not is_chief([c for _, _, c in runs]):
        return None
    table = [
        {
            "setting": label,
            "pair": pair,
            "ratio_start": config.plan().ratio_at(0),
            "best_test_accuracy": r.get("best_test_accuracy"),
            "final_test_accuracy": r.get("final_test_accuracy"),
            "status": r["status"],
            "run_dir": r["run_dir"],
        }
        for (label, pair, config), r in zip(runs, results)
    ]
    names = [label for label, _, _ in runs]
    distances = pair_distances(names, results)
    within = [
        distances["test_accuracy"][f"{names[0]} | {names[1]}"],
        distances["test_accuracy"][f"{names[2]} | {names[3]}"],
    ]
    across = [
        distances["test_accuracy"][f"{names[i]} | {names[j]}"] for i in (0, 1) for j in (2, 3)
    ]
    report = {
        "runs": table,
        "curve_distances": distances,
        "within_pair": within,
        "across_pairs": across,
        "pairs_closer_than_across": max(within) < min(across),
        "png": draw(runs, results, logdir),
        "csv": os.path.join(logdir, "fig1.csv"),
    }
    files.write_json(os.path.join(logdir, "fig1.json"), report)
    files.write_csv(report["csv"], table, list(table[0]))
    return report


def pair_distances(names: list[str], results: list[dict]) -> dict:
    """Mean |Δ accuracy| over epochs between every two runs, for test and train accuracy."""
    return {
        key: {
            f"{names[i]} | {names[j]}": curves.curve_distance(results[i], results[j], key)
            for i in range(len(names))
            for j in range(i + 1, len(names))
        }
        for key in ("test_accuracy", "train_accuracy")
    }


def draw(runs, results, logdir: str) -> list[str]:
    """``fig1.png`` (per epoch) and ``fig1_sde_time.png`` (against Σ η): the cyclic pair and
    the constant pair side by side."""
    from lrbs_tf.figures.plots import learning_curve_panels, shown

    panels = [
        (
            "cyclic: CBS vs CLR (same η/S every step)",
            [(label, r, c) for (label, pair, c), r in zip(runs, results) if pair == "cyclic"],
        ),
        (
            "constant: 0.001/128 vs 0.005/640",
            [(label, r, c) for (label, pair, c), r in zip(runs, results) if pair == "constant"],
        ),
    ]
    first = runs[0][2]
    title = f"Fig. 1 — {shown(first.model)} on {shown(first.dataset)}: dynamics depend on η/S"
    png = learning_curve_panels(panels, os.path.join(logdir, "fig1.png"), title)
    png_sde = learning_curve_panels(
        panels,
        os.path.join(logdir, "fig1_sde_time.png"),
        "Fig. 1 against SDE time (Σ η over steps)",
        x_of=lambda r, c: curves.sde_time(c, c.num_train),
        xlabel="SDE time Σ η",
    )
    return [png, png_sde]
