"""Paper Fig. 5: where the η/S invariance breaks — η = η₀β and S = S₀β for growing β, on
training sets of several sizes. Every run has the same η/S; the SDE picture predicts equal
validation curves per epoch, and it breaks for large β, sooner on smaller training sets."""

from __future__ import annotations

import os
import time

import numpy as np

from lrbs_tf import files
from lrbs_tf.core.ratio import parse_ratio
from lrbs_tf.figures.curves import curve
from lrbs_tf.figures.runs import is_chief, train_all
from lrbs_tf.models import sources as model_sources
from lrbs_tf.training.config import RunConfig


def configs(base: str, betas, sizes, seeds, lr_schedule=None, **run_settings) -> list[tuple]:
    """``(N, β, config)`` for every training-set size, β and seed, validated."""
    base = parse_ratio(base)
    model = model_sources.describe(run_settings.get("model", "mlp")).label
    out = []
    for size in sizes:
        for beta in betas:
            for seed in seeds:
                settings = dict(run_settings, train_size=size, seed=seed)
                out.append(
                    (
                        size,
                        beta,
                        RunConfig(
                            lr=base.lr * beta,
                            batch_size=base.batch_size * beta,
                            name=f"fig5-{model}-n{size}-beta{beta}-seed{seed}",
                            lr_schedule=lr_schedule,
                            **settings,
                        ).validate(),
                    )
                )
    return out


def run(
    runs: list[tuple], logdir: str, say=lambda line: None, progress: str = "epoch"
) -> dict | None:
    """Train the runs, summarise each (N, β) over seeds, draw and write."""
    from lrbs_tf import files

    tick = time.time()
    results = train_all(
        [(f"N={n} β={b} η/S={c.lr:g}/{c.batch_size} seed={c.seed}", c) for n, b, c in runs],
        say,
        progress,
    )
    if not is_chief([c for _, _, c in runs]):
        return None
    rows, curves = [], {}
    for size in dict.fromkeys(n for n, _, _ in runs):
        for beta in dict.fromkeys(b for _, b, _ in runs):
            group = [(c, r) for (n, b, c), r in zip(runs, results) if n == size and b == beta]
            rows.append(summarize(size, beta, group))
            curves[(size, beta)] = [
                curve(r, "validation_accuracy") for _, r in group if r["epochs"]
            ]
    from lrbs_tf.figures.plots import shown

    base = runs[0][2]
    png = figure(
        rows,
        curves,
        os.path.join(logdir, "fig5.png"),
        f"Fig. 5 — {shown(base.model)} on {shown(base.dataset)}: η = {base.lr / runs[0][1]:g}β, "
        f"S = {base.batch_size // runs[0][1]}β (same η/S); * = a seed diverged",
    )
    report = {
        "rows": rows,
        "png": png,
        "csv": os.path.join(logdir, "fig5.csv"),
        "wall_time": time.time() - tick,
    }
    files.write_csv(report["csv"], rows, list(rows[0]))
    files.write_json(os.path.join(logdir, "fig5.json"), report)
    return report


def summarize(size: int, beta: int, group: list[tuple]) -> dict:
    """One (N, β): its η and S, the mean and spread over seeds of the final and best
    validation accuracy, and how many seeds diverged."""
    finals = [
        r["final_validation_accuracy"]
        for _, r in group
        if r.get("final_validation_accuracy") is not None
    ]
    bests = [
        r["best_validation_accuracy"]
        for _, r in group
        if r.get("best_validation_accuracy") is not None
    ]
    return {
        "train_size": size,
        "beta": beta,
        "lr": group[0][0].lr,
        "batch_size": group[0][0].batch_size,
        "seeds": len(group),
        "final_mean": float(np.mean(finals)) if finals else None,
        "final_std": float(np.std(finals)) if len(finals) > 1 else None,
        "best_mean": float(np.mean(bests)) if bests else None,
        "best_std": float(np.std(bests)) if len(bests) > 1 else None,
        "diverged_seeds": sum(r["status"] == "diverged" for _, r in group),
    }


def figure(rows, curves: dict, path: str, title: str) -> str:
    """Validation accuracy per epoch: one panel per training-set size, one curve per β (the
    mean over seeds)."""
    from matplotlib.figure import Figure

    from lrbs_tf.figures.plots import COLORS

    sizes = list(dict.fromkeys(r["train_size"] for r in rows))
    fig = Figure(figsize=(5 * len(sizes), 4))
    axes = fig.subplots(1, len(sizes), squeeze=False, sharey=True)
    for ax, size in zip(axes[0], sizes):
        for j, row in enumerate(r for r in rows if r["train_size"] == size):
            runs = curves[(size, row["beta"])]
            if not runs:
                continue
            padded = np.full((len(runs), max(len(c) for c in runs)), np.nan)
            for k, c in enumerate(runs):
                padded[k, : len(c)] = c
            label = f"β={row['beta']} ({row['best_mean'] or 0:.3f})" + (
                "*" if row["diverged_seeds"] else ""
            )
            ax.plot(
                np.arange(1, padded.shape[1] + 1),
                np.nanmean(padded, axis=0),
                color=COLORS[j % len(COLORS)],
                label=label,
                marker="o",
                markersize=3,
            )
        ax.set(title=f"training set N = {size}", xlabel="epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, title="β (best val. acc.)", title_fontsize=8)
    axes[0][0].set_ylabel("validation accuracy")
    fig.suptitle(title)
    fig.tight_layout()
    files.save_figure(fig, path, dpi=110)
    return path
