"""Matplotlib figures for the experiments (Agg backend: files only, no display needed)."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from lrbs_tf.experiment import curve  # noqa: E402

COLORS = ("tab:blue", "tab:red", "tab:green", "tab:orange", "tab:brown", "tab:purple",
          "tab:gray", "tab:olive", "tab:cyan", "tab:pink")


def learning_curve_panels(panels, path: str, title: str, keys=("train_accuracy", "test_accuracy"),
                          x_of=None, xlabel: str = "epoch"):
    """One column per panel, one row per metric in ``keys``.

    ``panels`` is a list of ``(panel title, [(label, results, config), ...])``; ``x_of(results,
    config)`` gives the x values (default: epochs 1..n).
    """
    fig, axes = plt.subplots(len(keys), len(panels), figsize=(5.2 * len(panels), 3.4 * len(keys)),
                             squeeze=False, sharex="col")
    for col, (panel_title, runs) in enumerate(panels):
        for row, key in enumerate(keys):
            ax = axes[row][col]
            for i, (label, results, config) in enumerate(runs):
                y = curve(results, key)
                x = (np.arange(1, len(y) + 1) if x_of is None
                     else np.asarray(x_of(results, config))[:len(y)])
                style = "-" if i % 2 == 0 else "--"
                ax.plot(x, y, style, color=COLORS[i % len(COLORS)], label=label, linewidth=1.6,
                        marker="o" if len(y) < 30 else None, markersize=3)
            ax.set_ylabel(key.replace("_", " "))
            ax.grid(alpha=0.3)
            if row == 0:
                ax.set_title(panel_title, fontsize=10)
            if row == len(keys) - 1:
                ax.set_xlabel(xlabel)
        axes[0][col].legend(fontsize=8, loc="lower right")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def spectral_density_plot(density, path: str, title: str, points: int = 2000) -> str:
    """The SLQ spectral density (:class:`lrbs_tf.spectral.SpectralDensity`) on a log scale."""
    lo, hi = float(density.nodes.min()), float(density.nodes.max())
    pad = 0.05 * (hi - lo or 1.0)
    grid = np.linspace(lo - pad, hi + pad, points)
    values = density.density(grid)
    fig, ax = plt.subplots(figsize=(6, 3.8))
    ax.semilogy(grid, np.maximum(values, 1e-12))
    ax.set(xlabel="eigenvalue", ylabel="density", title=title)
    ax.set_ylim(bottom=max(values.max() * 1e-8, 1e-12))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
