"""Matplotlib figures for the experiments, drawn on ``matplotlib.figure.Figure`` objects and
saved to files: no pyplot state and no backend switch, so importing this module never changes
the backend of a notebook."""

from __future__ import annotations

import math
import textwrap

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from lrbs_tf import files
from lrbs_tf.figures.curves import curve

COLORS = (
    "tab:blue",
    "tab:red",
    "tab:green",
    "tab:orange",
    "tab:brown",
    "tab:purple",
    "tab:gray",
    "tab:olive",
    "tab:cyan",
    "tab:pink",
)


NAMES = {  # the paper's models and data by their names in a figure's title
    "mlp": "4-layer BN-ReLU MLP",
    "vgg11": "VGG11",
    "resnet56": "ResNet-56",
    "fashion_mnist": "Fashion-MNIST",
    "cifar10": "CIFAR-10",
    "cifar10_synthetic": "CIFAR-10 stand-in [SYNTHETIC DATA]",
}


def shown(given: str) -> str:
    """A model or dataset as a title names it: the paper's by name, a user's as given."""
    return NAMES.get(given, given)


def learning_curve_panels(
    panels,
    path: str,
    title: str,
    keys=("train_accuracy", "test_accuracy"),
    x_of=None,
    xlabel: str = "epoch",
):
    """One column per panel, one row per metric in ``keys``.

    ``panels`` is a list of ``(panel title, [(label, results, config), ...])``; ``x_of(results,
    config)`` gives the x values (default: epochs 1..n). Accuracies are drawn in percent, as
    the commands' tables print them.
    """
    fig = Figure(figsize=(5.2 * len(panels), 3.4 * len(keys)))
    axes = fig.subplots(len(keys), len(panels), squeeze=False, sharex="col")
    for col, (panel_title, runs) in enumerate(panels):
        for row, key in enumerate(keys):
            ax = axes[row][col]
            for i, (label, results, config) in enumerate(runs):
                y = curve(results, key)
                if key.endswith("accuracy"):
                    y = [None if v is None else 100 * v for v in y]
                x = (
                    np.arange(1, len(y) + 1)
                    if x_of is None
                    else np.asarray(x_of(results, config))[: len(y)]
                )
                style = "-" if i % 2 == 0 else "--"
                ax.plot(
                    x,
                    y,
                    style,
                    color=COLORS[i % len(COLORS)],
                    label=label,
                    linewidth=1.6,
                    marker="o" if len(y) < 30 else None,
                    markersize=3,
                )
            ax.set_ylabel(key.replace("_", " ") + (" (%)" if key.endswith("accuracy") else ""))
            ax.grid(alpha=0.3)
            if row == 0:
                ax.set_title(panel_title, fontsize=10)
            if row == len(keys) - 1:
                ax.set_xlabel(xlabel)
        axes[0][col].legend(fontsize=8, loc="lower right")
    # a user's model and data can be long paths: wrap the title to the figure's width
    fig.suptitle(textwrap.fill(title, width=int(9 * 5.2 * len(panels))), fontsize=11)
    fig.tight_layout()
    files.save_figure(fig, path, dpi=120)
    return path


def spectral_density_plot(density, path: str, title: str, points: int = 2000) -> str:
    """The SLQ spectral density (:class:`lrbs_tf.probes.spectral.SpectralDensity`), log scale."""
    lo, hi = float(density.nodes.min()), float(density.nodes.max())
    pad = 0.05 * (hi - lo or 1.0)
    grid = np.linspace(lo - pad, hi + pad, points)
    values = density.density(grid)
    fig = Figure(figsize=(6, 3.8))
    ax = fig.subplots()
    ax.semilogy(grid, np.maximum(values, 1e-12))
    ax.set(xlabel="eigenvalue", ylabel="density", title=title)
    ax.set_ylim(bottom=max(values.max() * 1e-8, 1e-12))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    files.save_figure(fig, path, dpi=110)
    return path


FIG3_PANELS = (
    ("lambda_max", "λ_max (largest Hessian eigenvalue)", "log"),
    ("frobenius", "‖H‖_F (Hutchinson)", "log"),
    ("validation_accuracy", "validation accuracy (%)", "percent"),
    ("final_weights_loss", "training-set loss at the final weights", "log"),
)


def fig3_plot(
    rows, correlations: dict, path: str, title: str, loss_target: float | None = None
) -> str:
    """Paper Fig. 3 from sweep rows (:mod:`lrbs_tf.sweeps.tables`), written to ``path``: see
    :func:`fig3_figure`."""
    files.save_figure(fig3_figure(rows, correlations, title, loss_target), path, dpi=110)
    return path


def fig3_figure(rows, correlations: dict, title: str, loss_target: float | None = None):
    """λ_max, ‖H‖_F, validation accuracy and the final training-set loss against η/S on log
    axes spanning whole decades; one marker per (η, S) at the mean over seeds with min–max
    bars, colour = S (labelled colour bar), hollow = capped before the loss target (not in ρ),
    red × = diverged; panels lettered (a)–(d). A matplotlib Figure, drawn without pyplot."""
    with matplotlib.rc_context(FIG3_FONTS):  # fonts for a figure shown at half its size
        fig = Figure(figsize=(11, 8.6), layout="constrained")
        axes = fig.subplots(2, 2)
        fig3_panels(fig, axes, rows, correlations, loss_target)
        lines = [textwrap.fill(line, width=100) for line in title.split("\n")]
        fig.suptitle("\n".join(lines), fontsize=13)
    return fig


FIG3_FONTS = {
    "font.size": 12,
    "axes.labelsize": 13,
    "xtick.labelsize": 12,
    "ytick.labelsize": 12,
    "legend.fontsize": 11,
}


def fig3_panels(fig, axes, rows, correlations: dict, loss_target: float | None) -> None:
    """The four panels of :func:`fig3_figure`, lettered (a)–(d), and the colour bar of S."""
    from matplotlib.colors import LogNorm

    batches = sorted({r["batch_size"] for r in rows})
    norm = LogNorm(vmin=min(batches), vmax=max(max(batches), min(batches) * 1.01))
    cmap = matplotlib.colormaps["viridis"]
    for letter, ax, (q, label, scale) in zip("abcd", axes.flat, FIG3_PANELS):
        factor = 100.0 if scale == "percent" else 1.0
        pts = fig3_points(ax, rows, q, factor, lambda b: cmap(norm(b)))
        if q == "final_weights_loss" and loss_target:
            ax.axhline(loss_target, color="gray", linestyle="--", linewidth=1)
            ax.annotate(
                f"target {loss_target:g}",
                (0.02, loss_target),
                fontsize=11,
                xycoords=("axes fraction", "data"),
                va="bottom",
                color="gray",
            )
        target = loss_target if q == "final_weights_loss" else None
        decade_axes(ax, rows, pts, scale, factor, target)
        correlation_note(ax, correlations.get(q) or {})
        ax.set(xlabel="η / S", ylabel=label)
        ax.set_title(f"({letter})", loc="left", fontweight="bold")
        ax.grid(alpha=0.3, which="both")
    mappable = matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap)
    bar = fig.colorbar(mappable, ax=axes, label="batch size S", shrink=0.7)
    bar.minorticks_off()
    bar.set_ticks(batches)
    bar.set_ticklabels([str(b) for b in batches])


def fig3_points(ax, rows, q: str, factor: float, color_of) -> list[dict]:
    """One marker per (η, S) of quantity ``q`` (× ``factor``): the mean over seeds with
    min–max bars, hollow when capped; red × under the lowest point where a run diverged.
    Returns the points drawn."""
    from lrbs_tf.sweeps.tables import points

    pts = [p for p in points(rows, q) if p["mean"] is not None]
    for p in pts:
        color = color_of(p["batch_size"])
        y = p["mean"] * factor
        err = [[y - p["low"] * factor], [p["high"] * factor - y]]
        ax.errorbar(
            p["ratio"],
            y,
            yerr=err if p["seeds"] > 1 else None,
            fmt="none",
            ecolor=color,
            elinewidth=1.2,
            capsize=2,
            clip_on=False,  # a point on a decade line shows whole
        )
        ax.scatter(
            p["ratio"],
            y,
            s=46,
            facecolors="none" if p["hollow"] else color,
            edgecolors=color,
            linewidths=1.6,
            zorder=3,
            clip_on=False,
        )
    diverged = [p for p in points(rows, "ratio") if p["diverged"]]
    if diverged and pts:
        low = min(p["low"] for p in pts) * factor
        ax.scatter(
            [p["ratio"] for p in diverged],
            [low] * len(diverged),
            marker="x",
            color="red",
            label="diverged",
            zorder=3,
        )
        ax.legend(fontsize=8, loc="best")
    return pts


def decade_axes(ax, rows, pts, scale: str, factor: float, target: float | None) -> None:
    """Log axes spanning whole decades around the points (and a loss target)."""
    from matplotlib.ticker import LogLocator, NullFormatter

    from lrbs_tf.sweeps.tables import points

    ax.set_xscale("log")
    values = [v * factor for p in pts for v in (p["low"], p["high"])]
    if target:
        values.append(target)
    if scale == "log" and values and min(values) > 0:
        ax.set_yscale("log")
        lo, hi = math.floor(math.log10(min(values))), math.ceil(math.log10(max(values)))
        ax.set_ylim(10**lo, 10 ** max(hi, lo + 1))
        ax.yaxis.set_major_locator(LogLocator(base=10))
    ratios = [p["ratio"] for p in points(rows, "ratio")]
    if ratios:
        ax.set_xlim(
            10 ** math.floor(math.log10(min(ratios))), 10 ** math.ceil(math.log10(max(ratios)))
        )
    ax.xaxis.set_minor_formatter(NullFormatter())  # 2×10⁻⁴, 3×10⁻⁴ … would overlap


def correlation_note(ax, c: dict) -> None:
    """Spearman's ρ in the corner the trend leaves free."""
    if c.get("rho") is None:
        return
    right = c["rho"] < 0
    ax.text(
        0.98 if right else 0.02,
        0.95,
        f"Spearman ρ = {c['rho']:+.2f} (n = {c['n']})",
        transform=ax.transAxes,
        ha="right" if right else "left",
        va="top",
        fontsize=11,
        bbox=dict(facecolor="white", alpha=0.8, lw=0),
    )


OUTCOME_STYLE = {
    "stable": ("o", "tab:green"),
    "unstable": ("^", "tab:orange"),
    "diverged": ("x", "tab:red"),
}


def confusion_figure(rows, path: str, unstable_at: float, edge_at: float | None = None) -> str:
    """The stability check: each candidate at its η·λ_step (log x), by sweep, marked by what
    happened; the advisor's line at ``unstable_at`` and its "edge of stability" band from
    ``edge_at``."""
    sweeps = list(dict.fromkeys(r["sweep"] for r in rows))
    fig = Figure(figsize=(5.5 * len(sweeps), 3.6))
    axes = fig.subplots(1, len(sweeps), squeeze=False)[0]
    for ax, sweep in zip(axes, sweeps):
        group = [r for r in rows if r["sweep"] == sweep]
        for r in group:
            marker, color = OUTCOME_STYLE[r["outcome"]]
            ax.scatter(
                r["lr_times_step_sharpness"],
                r["lr"] if sweep == "η sweep" else r["batch_size"],
                marker=marker,
                color=color,
                s=60,
                zorder=3,
            )
        for name, (marker, color) in OUTCOME_STYLE.items():
            ax.scatter([], [], marker=marker, color=color, label=name)
        ax.axvline(unstable_at, color="gray", linestyle="--", label=f"η·λ_step = {unstable_at:g}")
        if edge_at is not None:
            ax.axvspan(edge_at, unstable_at, color="gold", alpha=0.15, label="edge (loss bumps)")
        ax.set(
            xscale="log",
            yscale="log",
            xlabel="η · step sharpness at θ0",
            ylabel="η" if sweep == "η sweep" else "S",
            title=sweep,
        )
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.suptitle("What SGD did from θ0 against the advisor's line (verdict: unstable right of it)")
    fig.tight_layout()
    files.save_figure(fig, path, dpi=110)
    return path
