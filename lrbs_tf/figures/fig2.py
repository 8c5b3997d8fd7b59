"""Paper Fig. 2: moving a recipe to a larger batch — rescale η linearly, by √S, or not at all.

A small-batch baseline η0/S0 against the larger batch S with η from each rule (linear
η0·S/S0 keeps η/S; sqrt η0·√(S/S0); none η0); the paper finds the linear rule's curve closest
to the baseline. "Distance" is the mean |Δ accuracy| over epochs.
"""

from __future__ import annotations

import os

from lrbs_tf.core.ratio import parse_ratio, rescale_lr
from lrbs_tf.figures import curves
from lrbs_tf.figures.runs import is_chief, train_all
from lrbs_tf.settings import ConfigError
from lrbs_tf.training.config import RunConfig


def configs(
    base: str, batch_size: int, rules: str, lr_schedule: str | None = None, **run_settings
) -> list[tuple]:
    """``(label, config)`` of the baseline and of each rule at ``batch_size``, validated."""
    base = parse_ratio(base)
    if batch_size <= base.batch_size:
        raise ConfigError(
            f"--batch-size ({batch_size}) should be larger than the base batch ({base.batch_size})"
        )
    runs = [("baseline", base)] + [
        (rule, rescale_lr(base, batch_size, rule)) for rule in rules.split(",")
    ]
    seed = run_settings.get("seed", 0)
    return [
        (
            f"{label}: {ratio.lr:.4g}/{ratio.batch_size}",
            RunConfig(
                lr=ratio.lr,
                batch_size=ratio.batch_size,
                lr_schedule=lr_schedule,
                name=f"fig2-{label}-lr{ratio.lr:.6g}-bs{ratio.batch_size}-seed{seed}",
                **run_settings,
            ).validate(),
        )
        for label, ratio in runs
    ]


def run(
    runs: list[tuple], logdir: str, say=lambda line: None, progress: str = "epoch"
) -> dict | None:
    """Train (or reuse) the runs, measure each curve's distance to the baseline, draw, write."""
    from lrbs_tf import files
    from lrbs_tf.figures.plots import learning_curve_panels, shown

    results = train_all(runs, say, progress)
    if not is_chief([c for _, c in runs]):
        return None
    table = []
    for (label, config), r in zip(runs, results):
        table.append(
            {
                "setting": label,
                "lr": config.lr,
                "batch_size": config.batch_size,
                "ratio": config.ratio,
                "distance_to_baseline_test": curves.curve_distance(results[0], r, "test_accuracy"),
                "distance_to_baseline_train": curves.curve_distance(
                    results[0], r, "train_accuracy"
                ),
                "best_test_accuracy": r.get("best_test_accuracy"),
                "final_test_accuracy": r.get("final_test_accuracy"),
                "status": r["status"],
                "run_dir": r["run_dir"],
            }
        )
    closest = {
        key: min(table[1:], key=lambda row: row[f"distance_to_baseline_{key}"])["setting"]
        for key in ("train", "test")
    }
    first = runs[0][1]
    png = learning_curve_panels(
        [
            (
                f"baseline {first.lr:g}/{first.batch_size} vs S={runs[1][1].batch_size}",
                [(label, r, c) for (label, c), r in zip(runs, results)],
            )
        ],
        os.path.join(logdir, "fig2.png"),
        f"Fig. 2 — {shown(first.model)} on {shown(first.dataset)}: rescaling η with the batch size",
    )
    report = {
        "runs": table,
        "closest": closest,
        "png": png,
        "csv": os.path.join(logdir, "fig2.csv"),
    }
    files.write_json(os.path.join(logdir, "fig2.json"), report)
    files.write_csv(report["csv"], table, list(table[0]))
    return report
