"""The SDE / Ornstein–Uhlenbeck theory of SGD checked numerically on quadratics, and where it
breaks: stationary E[L] on a grid of η × S against the continuous and the exact discrete
formulas, equal-η/S learning curves in SDE time, and the breakdowns in η and in S/N (see
:mod:`lrbs_tf.cli.theory` for the command and the measured results)."""

from __future__ import annotations

import os
import time

import numpy as np
from matplotlib.figure import Figure

from lrbs_tf import files
from lrbs_tf.progress import stage
from lrbs_tf.theory import sde as T

SPECTRUM = np.array([8.0, 4.0, 2.0, 1.0, 0.5])


def run(logdir: str, chains: int = 1000, steps: int = 2000, seed: int = 0) -> dict:
    """Simulate, compare, draw ``theory.png`` and write ``theory.json``/``theory.csv``.
    ``steps``: measured steps of every stationary simulation (after its burn-in)."""
    os.makedirs(logdir, exist_ok=True)
    tick = time.time()
    Q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((5, 5)))
    H = Q @ np.diag(SPECTRUM) @ Q.T
    cost = Cost(H, chains, steps)
    fig = Figure(figsize=(11, 8.5))
    axes = fig.subplots(2, 2)
    with stage(f"theory: stationary E[L] on 16 η × S points, {chains} chains", cost.grid()):
        rows = grid(H, chains, steps, seed)
        equal_ratio_panel(axes[0][0], H, seed)
    grid_panel(axes[0][1], rows)
    with stage("theory: the breakdown in η, at 7 values of η·λ_max", cost.eta()):
        eta = breakdown_in_eta(axes[1][0], H, chains, steps, seed)
    with stage("theory: the breakdown in S, at 10 values of S/N with real batches", cost.batch()):
        batch = breakdown_in_batch(axes[1][1], chains, steps, seed)
    fig.suptitle("SGD on quadratics: SDE theory, exact discrete corrections, breakdowns")
    fig.tight_layout()
    png = files.save_figure(fig, os.path.join(logdir, "theory.png"), dpi=110)
    report = {
        "grid": rows,
        "max_abs_rel_error_discrete": max(abs(r["rel_error_discrete"]) for r in rows),
        "max_abs_rel_error_continuous": max(abs(r["rel_error_continuous"]) for r in rows),
        "discrete_within_4se": sum(r["discrete_within_4se"] for r in rows),
        "breakdown_eta": eta,
        "breakdown_batch": batch,
        "chains": chains,
        "steps": steps,
        "seed": seed,
        "png": png,
        "wall_time": time.time() - tick,
    }
    files.write_json(os.path.join(logdir, "theory.json"), report)
    files.write_csv(os.path.join(logdir, "theory.csv"), rows, list(rows[0]))
    return report


class Cost:
    """Seconds the stages will take: their simulated steps (burn-in included) at the rate of a
    short timed simulation of each kind, on this machine now."""

    CALIBRATION = 300  # steps

    def __init__(self, H, chains: int, steps: int):
        self.steps = steps
        tick = time.time()
        T.simulate_gaussian_sgd(H, H, 0.1, 4, self.CALIBRATION, 0, chains, seed=0)
        self.gaussian = (time.time() - tick) / self.CALIBRATION
        problem = T.LeastSquares.random(n=100, d=5, noise=1.0, seed=0)
        tick = time.time()
        T.simulate_least_squares_sgd(problem, 0.01, 5, self.CALIBRATION, 0, max(50, chains // 5))
        self.least_squares = (time.time() - tick) / self.CALIBRATION

    def _gaussian(self, lrs) -> float:
        return self.gaussian * sum(int(10 / (lr * SPECTRUM.min())) + self.steps for lr in lrs)

    def grid(self) -> float:
        return 4 * self._gaussian(GRID_LRS)

    def eta(self) -> float:
        return self._gaussian(BREAKDOWN_LRS)

    def batch(self) -> float:
        return self.least_squares * sum(
            int(10 / (BREAKDOWN_RATIO * b * 0.2)) + self.steps for b in BREAKDOWN_BATCHES
        )


GRID_LRS, BREAKDOWN_LRS = (0.01, 0.05, 0.1, 0.2), (0.01, 0.05, 0.1, 0.15, 0.2, 0.225, 0.24)
BREAKDOWN_RATIO, BREAKDOWN_BATCHES = 0.002, (1, 2, 5, 10, 20, 40, 60, 80, 90, 95)


def grid(H, chains: int, steps: int, seed: int) -> list[dict]:
    """Stationary E[L] of SGD with Gaussian noise (C = H) on η × S, simulated, against the
    continuous η/(4S)·Tr H and the exact discrete formula."""
    rows = []
    for lr in GRID_LRS:
        for batch in (1, 4, 16, 64):
            burn = int(10 / (lr * SPECTRUM.min()))
            sim = T.simulate_gaussian_sgd(
                H, H, lr, batch, steps, burn, chains, seed=seed + len(rows)
            )
            cont = T.expected_loss_continuous(H, None, lr / batch)
            disc = T.expected_loss_discrete(H, None, lr, batch)
            rows.append(
                {
                    "lr": lr,
                    "batch": batch,
                    "ratio": lr / batch,
                    "lr_lambda_max": lr * SPECTRUM.max(),
                    "simulated": sim.mean_loss,
                    "stderr": sim.stderr,
                    "continuous": cont,
                    "discrete": disc,
                    "rel_error_continuous": cont / sim.mean_loss - 1,
                    "rel_error_discrete": disc / sim.mean_loss - 1,
                    "discrete_within_4se": abs(disc - sim.mean_loss) <= 4 * sim.stderr,
                }
            )
    return rows


def equal_ratio_panel(ax, H, seed: int) -> None:
    """Equal-η/S learning curves from one start, on the SDE time axis t = k·η."""
    theta0 = np.full(5, 2.0)
    for i, (lr, batch) in enumerate([(0.01, 1), (0.04, 4), (0.16, 16)]):
        sim = T.simulate_gaussian_sgd(
            H,
            H,
            lr,
            batch,
            1,
            int(3.0 / lr),
            200,
            seed=seed + 100 + i,
            theta0=theta0,
            record_every=1,
        )
        start = 0.5 * theta0 @ H @ theta0
        ax.plot(
            np.arange(len(sim.curve) + 1) * lr,
            np.concatenate([[start], sim.curve]),
            label=f"η/S = {lr:g}/{batch}",
        )
    ax.set_yscale("log")
    ax.set(
        xlabel="SDE time t = k·η",
        ylabel="mean loss over 200 chains",
        title="equal η/S: learning curves collapse in SDE time",
    )
    ax.legend(fontsize=8)


def grid_panel(ax, rows: list[dict]) -> None:
    """The grid's simulated stationary losses against both formulas."""
    sims = np.array([r["simulated"] for r in rows])
    ax.loglog(sims, [r["continuous"] for r in rows], "o", label="continuous η/(4S)·Tr H")
    ax.loglog(sims, [r["discrete"] for r in rows], "x", label="discrete (η/2S)Σλ/(2−ηλ)")
    lim = [sims.min() / 2, sims.max() * 2]
    ax.plot(lim, lim, "k:", linewidth=1)
    ax.set(
        xlabel="simulated stationary E[L]",
        ylabel="predicted",
        title="grid η ∈ {.01,.05,.1,.2} × S ∈ {1,4,16,64}",
    )
    ax.legend(fontsize=8)


def breakdown_in_eta(ax, H, chains: int, steps: int, seed: int) -> dict:
    """At a fixed η/S, E[L] against η·λ_max: simulated, the exact discrete formula, the SDE."""
    ratio = BREAKDOWN_RATIO
    lrs = np.array(BREAKDOWN_LRS)
    measured = []
    for i, lr in enumerate(lrs):
        burn = int(10 / (lr * SPECTRUM.min()))
        sim = T.simulate_gaussian_sgd(
            H, H, lr, lr / ratio, steps, burn, chains, seed=seed + 200 + i
        )
        measured.append(sim.mean_loss / T.expected_loss_continuous(H, None, ratio))
    fine = np.linspace(0.001, 0.245, 200)
    continuous = T.expected_loss_continuous(H, None, ratio)
    exact = [T.expected_loss_discrete(H, None, lr, lr / ratio) / continuous for lr in fine]
    ax.plot(fine * SPECTRUM.max(), exact, label="exact discrete formula")
    ax.plot(lrs * SPECTRUM.max(), measured, "o", label="simulated SGD")
    ax.axhline(1, color="k", linestyle=":", label="SDE (η/S only)")
    ax.set(
        xlabel="η·λ_max",
        ylabel="E[L] / (η/(4S)·Tr H)",
        yscale="log",
        title=f"breakdown in η at η/S = {ratio}",
    )
    ax.legend(fontsize=8)
    return {"lr_lambda_max": (lrs * SPECTRUM.max()).tolist(), "simulated_over_continuous": measured}


def breakdown_in_batch(ax, chains: int, steps: int, seed: int) -> dict:
    """At a fixed η/S, E[L] against S/N with real mini-batches of a least-squares problem:
    simulated, and the discrete formula with and without the finite-population factor."""
    problem = T.LeastSquares.random(
        n=100, d=5, noise=1.0, seed=seed, spectrum=np.array([4.0, 2.0, 1.0, 0.5, 0.25])
    )
    hessian, covariance = problem.hessian, problem.gradient_covariance()
    ratio = BREAKDOWN_RATIO
    batches = np.array(BREAKDOWN_BATCHES)
    simulated = [
        T.simulate_least_squares_sgd(
            problem,
            ratio * b,
            int(b),
            steps,
            int(10 / (ratio * b * 0.2)),
            max(50, chains // 5),
            seed=seed + 300 + i,
        ).mean_loss
        for i, b in enumerate(batches)
    ]
    s_over_n = batches / problem.n
    ax.plot(s_over_n, simulated, "o", label="simulated SGD, real batches")
    finite = [
        T.expected_loss_discrete(hessian, covariance, ratio * b, b, finite_n=problem.n)
        for b in batches
    ]
    iid = [T.expected_loss_discrete(hessian, covariance, ratio * b, b) for b in batches]
    ax.plot(s_over_n, finite, label="discrete × (N−S)/(N−1)")
    ax.plot(s_over_n, iid, "--", label="discrete, i.i.d. batches")
    ax.set(
        xlabel="S / N",
        ylabel="stationary E[L] − L*",
        yscale="log",
        title=f"breakdown in S: least squares, N = {problem.n}, η/S = {ratio}",
    )
    ax.legend(fontsize=8)
    return {"s_over_n": s_over_n.tolist(), "simulated": simulated}
