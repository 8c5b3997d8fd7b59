"""Tables, rank correlations and plots for sweeps over η and S (Fig. 3, tune.py)."""
from __future__ import annotations

import dataclasses
import math
import os

import scipy.stats

from lrbs_tf import runio


def row_of(config, results: dict | None) -> dict:
    """One table row for a run: its η, S, status, final metrics and probe values."""
    results = results or {}
    probe = results.get("probe") or {}
    status = results.get("status", "missing")
    return {
        "lr": config.lr, "batch_size": config.batch_size, "ratio": config.ratio,
        "seed": config.seed, "status": status,
        "reached_target": results.get("loss_target_reached") if config.loss_target else None,
        "epochs": len(results.get("epochs", [])),
        "train_loss": results.get("final_train_loss"),
        "validation_accuracy": results.get("final_validation_accuracy"),
        "test_accuracy": results.get("final_test_accuracy"),
        **{k: probe.get(k) for k in ("lambda_max", "frobenius", "frobenius_fd", "trace",
                                     "b_simple", "trace_c")},
        "run_dir": config.run_dir,
    }


def grid_table(bases, lrs, batches, prefix: str = "fig3") -> list[dict]:
    """Rows for every (seed, η, S) of a grid, read from the run folders."""
    rows = []
    for base in bases:
        for lr in lrs:
            for batch in batches:
                name = f"{prefix}-lr{lr:.6g}-bs{batch}-seed{base.seed}"
                config = dataclasses.replace(base, lr=float(lr), batch_size=int(batch),
                                             name=name)
                path = os.path.join(config.run_dir, "results.json")
                try:
                    results = runio.read_json(path)
                except runio.RunFolderError:
                    results = None
                rows.append(row_of(config, results))
    return rows


def spearman(rows: list[dict], quantities) -> dict:
    """Spearman's ρ of each quantity with η/S, over finished runs and over those that reached
    the loss target."""
    out = {}
    for q in quantities:
        entry = {}
        for label, keep in (("all", lambda r: True),
                            ("at_target", lambda r: r["reached_target"] in (None, True))):
            pts = [(r["ratio"], r[q]) for r in rows if r["status"] == "finished" and keep(r)
                   and r[q] is not None and math.isfinite(r[q])]
            if len(pts) >= 3 and len({p[1] for p in pts}) > 1:
                rho, p = scipy.stats.spearmanr(*zip(*pts))
                entry[label] = {"rho": float(rho), "p": float(p), "n": len(pts)}
            else:
                entry[label] = {"rho": None, "p": None, "n": len(pts)}
        out[q] = entry
    return out


def plot_grid(rows, quantities, path: str, title: str) -> str:
    """Each quantity against η/S: log x (and log y for curvature), colour = S; hollow markers
    for runs that missed the loss target, crosses for diverged runs (at the bottom)."""
    from lrbs_tf.plots import plt

    batches = sorted({r["batch_size"] for r in rows})
    cmap = plt.get_cmap("viridis")
    norm = plt.matplotlib.colors.LogNorm(vmin=min(batches), vmax=max(batches) + 1e-9)
    cols = 3
    nrows = math.ceil(len(quantities) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(5 * cols, 3.8 * nrows), squeeze=False,
                             layout="constrained")
    for ax, (q, label, logy) in zip(axes.flat, quantities):
        finite = [r for r in rows if r[q] is not None and math.isfinite(r[q])]
        for r in finite:
            hollow = r["reached_target"] is False
            color = cmap(norm(r["batch_size"]))
            ax.scatter(r["ratio"], r[q], s=40, facecolors="none" if hollow else color,
                       edgecolors=color, linewidths=1.5)
        diverged = [r for r in rows if r["status"] == "diverged"]
        if diverged and finite:
            low = min(r[q] for r in finite)
            ax.scatter([r["ratio"] for r in diverged], [low] * len(diverged), marker="x",
                       color="red", label="diverged")
            ax.legend(fontsize=8)
        ax.set_xscale("log")
        if logy and finite and min(r[q] for r in finite) > 0:
            ax.set_yscale("log")
        ax.set(xlabel="η / S", ylabel=label)
        ax.grid(alpha=0.3, which="both")
    for ax in list(axes.flat)[len(quantities):]:
        ax.axis("off")
    sm = plt.cm.ScalarMappable(norm=norm, cmap=cmap)
    fig.colorbar(sm, ax=axes, label="batch size S", shrink=0.8)
    fig.suptitle(title + "  (hollow: missed the loss target)")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
