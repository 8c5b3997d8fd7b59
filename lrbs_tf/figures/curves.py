"""Comparing the learning curves of runs (figure scripts)."""

from __future__ import annotations

import numpy as np

from lrbs_tf.training.config import RunConfig


def curve(results: dict, key: str) -> np.ndarray:
    """Per-epoch values of ``key`` (e.g. ``test_accuracy``) as a float array (NaN if missing)."""
    return np.array(
        [np.nan if e.get(key) is None else float(e[key]) for e in results["epochs"]], dtype=float
    )


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
