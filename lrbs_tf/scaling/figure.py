"""The figure of a scaling test (``scaling.png``): per rule, the loss against examples with
colour = k over the base's noise floor; the loss after E against S with the floor, B_simple
and the predicted stability edges; the SVAG curves against steps/ℓ."""

from __future__ import annotations

import math
import textwrap

import numpy as np

from lrbs_tf import files


def draw(report: dict, path: str) -> str:
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    plan, rules = report["plan"], list(report["rules"])
    ncols = max(len(rules), 2)
    fig = Figure(figsize=(4.6 * ncols, 8.2))
    axes = fig.subplots(2, ncols, squeeze=False)
    top = _top(report)
    cmap = colormaps["viridis"]
    kmax = max(plan["factors"])
    for ax, rule in zip(axes[0], rules):
        _floor(ax, plan["points"], report["floor"])
        for row in report["rules"][rule]["rows"]:
            colour = cmap(math.log(row["k"]) / math.log(kmax) * 0.9 if kmax > 1 else 0)
            _curve(ax, plan["points"], row, colour, f"k={row['k']} (S={row['batch']})", top)
        ax.set(title=f"{rule}: loss at the weights", xlabel="examples", ylim=(None, top))
        ax.legend(fontsize=7)
    for ax in axes[0][len(rules) :]:
        ax.axis("off")
    _after(axes[1][0], report, top)
    _svag(axes[1][1], report, top)
    for ax in axes[1][2:]:
        ax.axis("off")
    axes[0][0].set_ylabel("training-set loss (BN recomputed, inference mode)")
    title = (
        f"Scaling test from {report['label']}: η0/S0 = {plan['lr0']:g}/{plan['batch0']}, "
        f"N = {plan['num_train']}, E = {plan['examples']}; grey: the noise floor"
    )
    fig.suptitle("\n".join(textwrap.wrap(title, 40 * ncols)), fontsize=10)
    fig.tight_layout()
    return files.save_figure(fig, path)


def _top(report: dict) -> float:
    """The top of every panel: a little above the floor (curves above it are drawn clipped)."""
    high = max(v for v in report["floor"]["high"] if math.isfinite(v))
    low = min(v for v in report["floor"]["low"] if math.isfinite(v))
    return high + 0.6 * (high - low) + 1e-12


def _floor(ax, x, floor) -> None:
    ax.fill_between(x, floor["low"], floor["high"], color="0.8", label="floor", zorder=0)
    ax.plot(x, floor["mean"], color="0.4", lw=1, zorder=1)


def _curve(ax, points, row, colour, label, top) -> None:
    y = np.minimum(np.array(row["losses"], float), top)
    y[~np.isfinite(y)] = top
    ax.plot(
        points[: len(y)],
        y,
        "o-" if row["keeps"] else "x--",
        color=colour,
        ms=3,
        label=label + ("" if row["keeps"] else f" ({row['way']})"),
    )


def _after(ax, report: dict, top: float) -> None:
    plan, floor = report["plan"], report["floor"]
    sizes = [k * plan["batch0"] for k in plan["factors"]]
    ax.axhspan(floor["low"][-1], floor["high"][-1], color="0.85", label="floor after E")
    for j, (rule, result) in enumerate(report["rules"].items()):
        rows = result["rows"]
        y = [min(r["loss_after"], top) if math.isfinite(r["loss_after"]) else top for r in rows]
        ax.plot([r["batch"] for r in rows], y, "-", color=f"C{j}", label=rule)
        ax.scatter(
            [r["batch"] for r in rows],
            y,
            color=[f"C{j}" if r["keeps"] else "white" for r in rows],
            edgecolor=f"C{j}",
        )
        predicted = (report["predictions"] or {}).get("rules", {}).get(rule, {})
        for key, style in (("edge_batch_stability", "--"), ("edge_batch_quadratic", ":")):
            if predicted.get(key):
                ax.axvline(predicted[key], color=f"C{j}", ls=style, lw=1)
    b = (report["predictions"] or {}).get("b_simple")
    if b and math.isfinite(b):
        ax.axvline(b, color="k", lw=1.5, label=f"B_simple ≈ {b:.3g}")
    ax.set(
        xscale="log",
        xlabel="S (filled: inside the floor; dashed/dotted: η·λ_step = 3.7 / 2)",
        ylabel=f"loss after E = {plan['examples']}",
        ylim=(None, top),
        title="loss after E against S",
    )
    ax.minorticks_off()
    ax.set_xticks(sizes, [str(s) for s in sizes], fontsize=7)
    ax.legend(fontsize=7)


def _svag(ax, report: dict, top: float) -> None:
    plan = report["plan"]
    if not report["svag"]["rows"]:
        ax.axis("off")
        return
    _floor(ax, plan["points"], report["floor"])
    base = report["base"][0]
    _curve(ax, plan["points"], base, "C0", "ℓ = 1 (the base)", top)
    for j, row in enumerate(report["svag"]["rows"], start=1):
        _curve(ax, plan["points"], row, f"C{j}", f"ℓ = {row['ell']} ({row['steps']} steps)", top)
    ax.set(
        title="SVAG at S0: the SDE test",
        xlabel="steps/ℓ × S0 (examples of the base)",
        ylim=(None, top),
    )
    ax.legend(fontsize=7)
