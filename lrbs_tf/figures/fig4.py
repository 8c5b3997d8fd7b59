"""Paper Fig. 4: the loss along the line between trained models, and a random plane.

Trains (or reuses) the runs, then evaluates train and validation loss and accuracy along
(1 − α)θ₁ + αθ₂ for each pair (:func:`lrbs_tf.probes.landscape.interpolate`) and a 2-D
filter-normalised random plane around the first two models.
"""

from __future__ import annotations

import os
import time

import numpy as np

from lrbs_tf import files
from lrbs_tf.figures.runs import is_chief, train_all
from lrbs_tf.models import sources as model_sources
from lrbs_tf.training.config import RunConfig

DEFAULT = {"A": (0.1, 128), "B": (0.1, 1024), "C": (0.0125, 128)}
PAIRS = [("A", "B"), ("A", "C"), ("B", "C")]


def runs_for(paper: bool, model: str):
    """The runs ``{key: (η, S)}`` and the pairs to interpolate."""
    if paper:
        if model == "vgg11":
            return (
                {f"β={b:g}": (0.1 * b, int(50 * b)) for b in (0.25, 1, 4)},
                [("β=0.25", "β=1"), ("β=1", "β=4")],
            )
        return {"A": (0.1, 128), "B": (0.1, 1024), "C": (0.01, 128)}, [("A", "B"), ("A", "C")]
    return DEFAULT, PAIRS


def configs(runs: dict, **run_settings) -> dict:
    model = model_sources.describe(run_settings.get("model", "mlp")).label
    seed = run_settings.get("seed", 0)
    return {
        key: RunConfig(
            lr=lr, batch_size=bs, name=f"fig4-{model}-lr{lr:g}-bs{bs}-seed{seed}", **run_settings
        ).validate()
        for key, (lr, bs) in runs.items()
    }


def run(
    configs: dict,
    pairs,
    logdir: str,
    bn: str = "recompute",
    points: int = 31,
    eval_examples: int = 5000,
    plane_points: int = 11,
    say=lambda line: None,
    progress: str = "epoch",
) -> dict | None:
    """Train the runs, interpolate each pair, draw the curves and planes, write ``fig4.json``."""
    from lrbs_tf import files
    from lrbs_tf.data.datasets import load_for

    tick = time.time()
    train_all(
        [(f"run {key}: η/S = {c.lr:g}/{c.batch_size}", c) for key, c in configs.items()],
        say,
        progress,
    )
    if not is_chief(configs.values()):
        return None
    models = saved_models(configs)
    first = next(iter(configs.values()))
    data = load_for(first)
    train_xy = (data.train.x[:eval_examples], data.train.y[:eval_examples])
    val_xy = (data.validation.x[:eval_examples], data.validation.y[:eval_examples])
    alphas = np.linspace(-1, 2, points)
    curves = interpolate_pairs(models, pairs, train_xy, val_xy, alphas, bn, say)
    png = interpolation_figure(
        curves,
        pairs,
        configs,
        alphas,
        title_of(first, data.name, bn),
        os.path.join(logdir, "fig4.png"),
    )
    planes, png_plane = {}, None
    if plane_points:
        planes = random_planes(models, configs, train_xy, plane_points, first.seed, say)
        png_plane = plane_figure(planes, configs, os.path.join(logdir, "fig4_plane.png"))
    report = {
        "runs": {
            k: {"lr": c.lr, "batch_size": c.batch_size, "ratio": c.ratio, "run_dir": c.run_dir}
            for k, c in configs.items()
        },
        "curves": curves,
        "planes": planes,
        "bn": bn,
        "eval_examples": eval_examples,
        "dataset": data.name,
        "png": [p for p in (png, png_plane) if p],
        "wall_time": time.time() - tick,
    }
    files.write_json(os.path.join(logdir, "fig4.json"), report)
    return report


def saved_models(configs: dict) -> dict:
    """Each run's trained model (its ``model.keras``), by key."""
    from lrbs_tf.models.registry import load_model

    return {
        key: load_model(os.path.join(c.run_dir, "model.keras"), c.model)
        for key, c in configs.items()
    }


def title_of(config, data_name: str, bn: str) -> str:
    """The figure's title: the model and data by name, BatchNorm's mode, SYNTHETIC data."""
    from lrbs_tf.figures.plots import shown

    title = f"Fig. 4 — {shown(config.model)} on {shown(config.dataset)}: loss between minima "
    title += f"(BatchNorm: {bn})"
    if "synthetic" in data_name and "SYNTHETIC" not in title:
        title += " [SYNTHETIC DATA]"
    return title


def interpolate_pairs(models: dict, pairs, train_xy, val_xy, alphas, bn: str, say) -> dict:
    """Loss and accuracy along (1 − α)θ_a + αθ_b for every pair ``(a, b)``."""
    from lrbs_tf.probes import landscape

    curves = {}
    for a, b in pairs:
        say(f"interpolating {a} → {b}")
        curves[f"{a}->{b}"] = landscape.interpolate(
            models[a], models[b], train_xy, val_xy, alphas, bn=bn
        )
    return curves


def random_planes(models: dict, configs: dict, train_xy, points: int, seed: int, say) -> dict:
    """A filter-normalised random plane around each of the first two runs (2000 examples)."""
    from lrbs_tf.probes import landscape

    planes = {}
    for key in list(configs)[:2]:
        say(f"random plane around {key}")
        planes[key] = landscape.random_plane(
            models[key], (train_xy[0][:2000], train_xy[1][:2000]), points=points, seed=seed
        )
    return planes


def interpolation_figure(curves: dict, pairs, configs: dict, alphas, title: str, path: str) -> str:
    """One panel per pair: train/validation loss (log, blue) and accuracy (red) against α."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.2 * len(pairs), 4))
    axes = fig.subplots(1, len(pairs), squeeze=False)
    for ax, (a, b) in zip(axes[0], pairs):
        c = curves[f"{a}->{b}"]
        ax.plot(alphas, c["train_loss"], "b-", label="train loss")
        ax.plot(alphas, c["validation_loss"], "b--", label="validation loss")
        ax.set(yscale="log", xlabel="α", ylabel="cross-entropy")
        twin = ax.twinx()
        twin.plot(alphas, c["train_accuracy"], "r-", label="train accuracy")
        twin.plot(alphas, c["validation_accuracy"], "r--", label="validation accuracy")
        twin.set_ylabel("accuracy", color="r")
        ra, rb = configs[a], configs[b]
        ax.set_title(
            f"α=0: {a} {ra.lr:g}/{ra.batch_size}  →  α=1: {b} {rb.lr:g}/{rb.batch_size}", fontsize=9
        )
        for x in (0, 1):
            ax.axvline(x, color="gray", lw=0.5)
        ax.legend(loc="upper left", fontsize=7)
        twin.legend(loc="upper right", fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    files.save_figure(fig, path, dpi=110)
    return path


def plane_figure(planes: dict, configs: dict, path: str) -> str:
    """log10 of the training loss on each model's filter-normalised random plane."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5 * len(planes), 4.2))
    axes = fig.subplots(1, len(planes), squeeze=False)
    for ax, (key, plane) in zip(axes[0], planes.items()):
        grid = np.array(plane["coordinates"])
        cs = ax.contourf(grid, grid, np.log10(np.array(plane["loss"]).T), levels=20, cmap="viridis")
        fig.colorbar(cs, ax=ax, label="log10 train loss")
        config = configs[key]
        ax.set_title(
            f"{key}: {config.lr:g}/{config.batch_size} (filter-normalised plane)", fontsize=9
        )
        ax.set(xlabel="direction 1", ylabel="direction 2")
    fig.tight_layout()
    files.save_figure(fig, path, dpi=110)
    return path
