"""Running groups of runs for the figure scripts, and comparing their learning curves."""
from __future__ import annotations

import dataclasses
import json
import logging
import os

import numpy as np

from lrbs_tf import runio
from lrbs_tf.config import RunConfig

log = logging.getLogger(__name__)


def finished_results(config: RunConfig) -> dict | None:
    """Results of a finished (or diverged) run of exactly ``config``, else ``None``."""
    path = os.path.join(config.run_dir, "results.json")
    try:
        results = runio.read_json(path)
        saved = runio.read_json(os.path.join(config.run_dir, "config.json"))["config"]
    except runio.RunFolderError:
        return None
    if results.get("status") not in ("finished", "diverged"):
        return None
    wanted = json.loads(json.dumps(runio._clean(config.to_dict())))
    ignore = {"overwrite", "logdir"}
    if {k: v for k, v in saved.items() if k not in ignore} != {
            k: v for k, v in wanted.items() if k not in ignore}:
        return None
    return results


def run_or_reuse(config: RunConfig) -> dict:
    """Train ``config`` unless a finished run of the same config is already in its folder."""
    from lrbs_tf.train import train

    results = finished_results(config)
    if results is not None:
        log.info("reusing finished run %s", config.run_dir)
        return results
    return train(dataclasses.replace(config, overwrite=True))


def curve(results: dict, key: str) -> np.ndarray:
    """Per-epoch values of ``key`` (e.g. ``test_accuracy``) as a float array (NaN if missing)."""
    return np.array([np.nan if e.get(key) is None else float(e[key])
                     for e in results["epochs"]], dtype=float)


def curve_distance(a: dict, b: dict, key: str = "test_accuracy") -> float:
    """Mean absolute gap between two runs' per-epoch ``key`` over their common epochs."""
    x, y = curve(a, key), curve(b, key)
    n = min(len(x), len(y))
    gap = np.abs(x[:n] - y[:n])
    return float(np.nanmean(gap)) if n else float("nan")


def sde_time(config: RunConfig, num_train: int) -> np.ndarray:
    """SDE time at the end of every epoch: the sum of η over the steps, Σ (η/S)·S.

    For constant η/S this is epochs × N × η/S; equal-η/S runs then share the x-axis.
    """
    plan = config.plan()
    per_epoch = [float(np.dot(*plan.epoch(num_train, e)[::-1])) for e in range(config.epochs)]
    return np.cumsum(per_epoch)
