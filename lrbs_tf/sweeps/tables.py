"""Tables and rank correlations for sweeps over η and S (Fig. 3, tune.py).

A row describes one run: its η, S, seed, status, whether it reached the sweep's loss target
(``converged``), the loss and accuracy over the training set at its final weights, validation
and test accuracy, and the probe values. Correlations with η/S use only finished runs that
reached the target (all finished runs when the sweep has no target): a run stopped by the
epoch cap is not at a minimum of the common loss, so it is shown (hollow) but not counted.
"""

from __future__ import annotations

import dataclasses
import math
import os

import scipy.stats

from lrbs_tf.training.folder import RunFolderError, read_json

PROBE_KEYS = (
    "lambda_max",
    "lambda_max_stderr",
    "frobenius",
    "frobenius_stderr",
    "frobenius_fd",
    "trace",
    "trace_stderr",
    "b_simple",
    "b_simple_stderr",
    "b_simple_kind",  # "estimate", or "lower bound" when ‖g‖² is not significantly above 0
    "trace_c",
)


def row_of(config, results: dict | None) -> dict:
    """One table row for a run: its η, S, status, final metrics and probe values."""
    results = results or {}
    probe = results.get("probe") or {}
    status = results.get("status", "missing")
    return {
        "lr": config.lr,
        "batch_size": config.batch_size,
        "ratio": config.ratio,
        "seed": config.seed,
        "status": status,
        "converged": (
            results.get("loss_target_reached")
            if config.loss_target is not None and status == "finished"
            else None
        ),
        "epochs": (
            round(results["epochs_trained"], 2)
            if "epochs_trained" in results
            else len(results.get("epochs", []))
        ),
        "final_weights_loss": results.get("final_weights_loss"),
        "final_weights_accuracy": results.get("final_weights_accuracy"),
        "train_loss": results.get("final_train_loss"),
        "validation_accuracy": results.get("final_validation_accuracy"),
        "test_accuracy": results.get("final_test_accuracy"),
        **{k: probe.get(k) for k in PROBE_KEYS},
        "fd_eps": (probe.get("settings") or {}).get("fd_eps") if "frobenius_fd" in probe else None,
        "probe_examples": (probe.get("settings") or {}).get("num_examples"),
        "wall_time": results.get("wall_time"),
        "run_dir": config.run_dir,
    }


def counted(row: dict) -> bool:
    """Does a row count in the correlations: finished, and at the loss target if there is one."""
    return row["status"] == "finished" and row["converged"] in (None, True)


def grid_table(bases, points, prefix: str = "fig3") -> list[dict]:
    """Rows for every seed (base) and (η, S) point of a grid, read from the run folders."""
    rows = []
    for base in bases:
        for lr, batch in points:
            config = grid_config(base, lr, batch, prefix)
            try:
                results = read_json(os.path.join(config.run_dir, "results.json"))
            except RunFolderError:
                results = None
            rows.append(row_of(config, results if isinstance(results, dict) else None))
    return rows


def grid_config(base, lr: float, batch: int, prefix: str = "fig3"):
    """The run of grid point (η, S) for ``base``'s seed (the name keras-tuner trials use)."""
    name = f"{prefix}-lr{lr:.6g}-bs{batch}-seed{base.seed}"
    return dataclasses.replace(base, lr=float(lr), batch_size=int(batch), name=name)


def spearman(rows: list[dict], quantities) -> dict:
    """Spearman's ρ (and p-value, n) of each quantity with η/S over the counted rows."""
    out = {}
    for q in quantities:
        pts = [
            (r["ratio"], r[q])
            for r in rows
            if counted(r) and r[q] is not None and math.isfinite(r[q])
        ]
        if len(pts) >= 3 and len({p[1] for p in pts}) > 1 and len({p[0] for p in pts}) > 1:
            rho, p = scipy.stats.spearmanr(*zip(*pts))
            out[q] = {"rho": float(rho), "p": float(p), "n": len(pts)}
        else:
            out[q] = {"rho": None, "p": None, "n": len(pts)}
    return out


def points(rows: list[dict], quantity: str) -> list[dict]:
    """Rows grouped by (η, S) across seeds: mean, min and max of ``quantity``; ``hollow``
    when any seed of the point was not counted (capped), ``diverged`` when every seed
    diverged."""
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["lr"], r["batch_size"]), []).append(r)
    out = []
    for (lr, batch), group in sorted(groups.items()):
        values = [
            r[quantity]
            for r in group
            if r["status"] == "finished" and r[quantity] is not None and math.isfinite(r[quantity])
        ]
        out.append(
            {
                "lr": lr,
                "batch_size": batch,
                "ratio": group[0]["ratio"],
                "seeds": len(values),
                "mean": sum(values) / len(values) if values else None,
                "low": min(values) if values else None,
                "high": max(values) if values else None,
                "hollow": not all(counted(r) for r in group if r["status"] == "finished"),
                "diverged": all(r["status"] == "diverged" for r in group),
            }
        )
    return out


def decades(rows: list[dict], quantity: str) -> float | None:
    """log10(max/min) of the per-point means of ``quantity`` over counted points."""
    means = [
        p["mean"]
        for p in points([r for r in rows if counted(r)], quantity)
        if p["mean"] is not None and p["mean"] > 0
    ]
    return math.log10(max(means) / min(means)) if len(means) >= 2 else None


def spread(rows: list[dict], quantity: str) -> float | None:
    """max/min of ``quantity`` over counted rows (e.g. the final-weights losses)."""
    values = [
        r[quantity] for r in rows if counted(r) and r[quantity] is not None and r[quantity] > 0
    ]
    return max(values) / min(values) if len(values) >= 2 else None
