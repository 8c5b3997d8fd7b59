"""Does the stability verdict predict what SGD does? A check on the Fashion-MNIST MLP (or on the
``--model`` and ``--dataset`` given; a dataset with fewer than 10000 training examples is used
whole, its S sweep ending at its N).

From one starting point θ0 (the model after a short warm-up run), candidate (η, S) settings are
judged by :func:`lrbs_tf.theory.advice.verdict` from a probe at θ0 — the step sharpness at each
candidate's own S (BatchNorm statistics of mini-batches of S) and B_simple — and then trained
from θ0 for a few epochs; what happened is read from the per-step losses:

* ``diverged``: a non-finite loss;
* ``unstable``: the loss spikes — its moving average over ``window`` steps rises above
  ``spike`` × the loss at θ0 — or ends above the loss at θ0 (oscillation without progress);
* ``stable``: otherwise.

Two sweeps: η at a fixed S past the point where training breaks, and S at a fixed η/S towards
the training-set size N. The confusion table of verdict against outcome, and the agreement,
are the calibration of the advisor's rule.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time

import numpy as np

from lrbs_tf.training.config import RunConfig


@dataclasses.dataclass(frozen=True)
class Check:
    train_size: int = 10000
    width: int | None = None  # the model's own (the MLP's: 256)
    warmup: tuple = (0.05, 100, 1)  # η, S, epochs of the run that gives θ0
    batch: int = 100  # the fixed S of the η sweep
    lrs: tuple = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 1.0, 2.0, 4.0, 8.0)
    ratio: float = 1e-3  # the fixed η/S of the S sweep
    batches: tuple = (50, 200, 300, 400, 1000, 2500, 5000, 10000)
    epochs: int = 2
    spike: float = 1.5
    window: int = 10
    probe_examples: int = 2000
    seed: int = 0

    def candidates(self) -> list[tuple]:
        lrs = [("η sweep", lr, self.batch) for lr in self.lrs]
        batches = [("S sweep", self.ratio * s, s) for s in self.batches]
        return lrs + batches


def outcome(losses: np.ndarray, start_loss: float, spike: float, window: int) -> str:
    """What happened to a run, from its per-step losses (see the module docstring)."""
    if len(losses) == 0 or not np.all(np.isfinite(losses)):
        return "diverged"
    smooth = (
        np.convolve(losses, np.ones(window) / window, mode="valid")
        if len(losses) >= window
        else losses
    )
    if smooth.max() > spike * start_loss or smooth[-1] > start_loss:
        return "unstable"
    return "stable"


def run(
    check: Check, logdir: str, say=lambda line: None, progress: str = "epoch", **run_settings
) -> dict:
    """Warm up, probe θ0 at every candidate S, train every candidate from θ0, tabulate."""
    from lrbs_tf import files
    from lrbs_tf.figures.plots import confusion_figure
    from lrbs_tf.theory.advice import EDGE_AT, UNSTABLE_AT

    tick = time.time()
    check = fitted(check, run_settings, logdir)
    run_settings = ({"width": check.width} if check.width else {}) | run_settings
    base = dict(run_settings, train_size=check.train_size, seed=check.seed, logdir=logdir)
    theta0, data, start_loss = warm_up(check, base, say, progress)
    probes = probe_at_every_batch(check, theta0, data, say)
    candidates, rows = check.candidates(), []
    for i, candidate in enumerate(candidates):
        probe, label = probes[candidate[2]], f"[{i + 1}/{len(candidates)}]"
        start = (theta0, data, start_loss)
        rows.append(train_candidate(check, base, start, candidate, probe, label, say, progress))
    report = {
        "check": dataclasses.asdict(check),
        "start_loss": start_loss,
        "unstable_at": UNSTABLE_AT,
        "edge_at": EDGE_AT,
        "rows": rows,
        "confusion": confusion(rows),
        "advisor_agreement": [sum(r["agrees"] for r in rows), len(rows)],
        "wall_time": time.time() - tick,
    }
    report["png"] = confusion_figure(
        rows, os.path.join(logdir, "stability.png"), UNSTABLE_AT, EDGE_AT
    )
    files.write_json(os.path.join(logdir, "stability.json"), report)
    files.write_csv(os.path.join(logdir, "stability.csv"), rows, list(rows[0]))
    return report


def fitted(check: Check, run_settings: dict, logdir: str) -> Check:
    """``check`` on a dataset with fewer than ``check.train_size`` training examples: all of
    them, the S sweep's batches below that N, then N itself, and probes on at most N."""
    pool = RunConfig(lr=0.1, batch_size=1, logdir=logdir, **run_settings).validate().num_train
    if pool >= check.train_size:
        return check
    batches = tuple(b for b in check.batches if b < pool) + (pool,)
    examples = min(check.probe_examples, pool)
    return dataclasses.replace(check, train_size=pool, batches=batches, probe_examples=examples)


def warm_up(check: Check, base: dict, say, progress: str):
    """Train the warm-up run; ``(θ0, its data, the training-set loss at θ0)``."""
    from lrbs_tf.data.datasets import load_for
    from lrbs_tf.models.registry import load_model
    from lrbs_tf.training.evaluation import DatasetLoss
    from lrbs_tf.training.run import train

    lr0, batch0, epochs0 = check.warmup
    warm = RunConfig(lr=lr0, batch_size=batch0, epochs=epochs0, name="warmup", **base)
    say(f"warm-up run {lr0:g}/{batch0}, {epochs0} epoch(s) → θ0")
    train(warm.validate(), progress=progress)
    data = load_for(warm)
    theta0 = load_model(os.path.join(warm.run_dir, "model.keras"), warm.model, compile=False)
    return theta0, data, DatasetLoss(theta0, data.train.x, data.train.y)()["loss"]


def probe_at_every_batch(check: Check, theta0, data, say) -> dict:
    """S → the probe of θ0 with the step sharpness at S, for every candidate's S."""
    from lrbs_tf.probes.prober import Prober
    from lrbs_tf.probes.settings import ProbeSettings

    settings = ProbeSettings(
        examples=check.probe_examples,
        noise_examples=min(500, check.probe_examples),
        finite_difference=False,
        trace_matvecs=9,
        frobenius_samples=3,
    )
    probes = {}
    for batch in sorted({s for _, _, s in check.candidates()}):
        prober = Prober(theta0, data.train.x, data.train.y, settings, step_batch=batch)
        probes[batch] = prober()
        say(
            f"θ0 probed at S = {batch}: step sharpness {probes[batch]['step_sharpness']:.4g}, "
            f"width {probes[batch]['width_sharpness']:.4g}, B_simple "
            f"{probes[batch]['b_simple']:.4g}"
        )
    return probes


def train_candidate(check, base, start, candidate, probe, label, say, progress) -> dict:
    """The verdict on one candidate ``(sweep, η, S)`` from the probe at its S, then what
    happened when it trained from ``start`` (θ0, its data, the loss at θ0): its row."""
    from lrbs_tf.models.registry import build_for
    from lrbs_tf.theory.advice import verdict
    from lrbs_tf.training.run import train
    from lrbs_tf.training.tensorboard import read_scalars

    (theta0, data, start_loss), (sweep, lr, batch) = start, candidate
    judged = verdict(lr, batch, len(data.train), probe["step_sharpness"], probe["b_simple"])
    config = RunConfig(
        lr=lr, batch_size=batch, epochs=check.epochs, name=f"check-lr{lr:.6g}-bs{batch}", **base
    ).validate()
    model = build_for(config)
    model.set_weights(theta0.get_weights())  # θ0, BatchNorm statistics included
    say(
        f"{label} {sweep}: η={lr:g} S={batch} (η·λ_step = {judged['lr_times_step_sharpness']:.3g}, "
        f"verdict {judged['verdict']})"
    )
    results = train(config, model=model, progress=progress)
    steps = read_scalars(os.path.join(config.run_dir, "tb", "train")).get("step/loss", [])
    losses = np.array([v for _, v in sorted(steps)], float)
    happened = (
        "diverged"
        if results["status"] == "diverged"
        else outcome(losses, start_loss, check.spike, check.window)
    )
    return {
        "sweep": sweep,
        "lr": lr,
        "batch_size": batch,
        "ratio": lr / batch,
        "step_sharpness": probe["step_sharpness"],
        "width_sharpness": probe["width_sharpness"],
        "b_simple": probe["b_simple"],
        **judged,
        "outcome": happened,
        "agrees": (judged["verdict"] == "stable") == (happened == "stable"),
        "max_smoothed_loss": float(_smooth_max(losses, check.window)),
        "final_loss": results.get("final_weights_loss"),
        "run_dir": config.run_dir,
    }


def confusion(rows) -> dict:
    """Counts of verdict (stable/unstable) against outcome (stable/unstable/diverged)."""
    out = {v: {o: 0 for o in ("stable", "unstable", "diverged")} for v in ("stable", "unstable")}
    for r in rows:
        out[r["verdict"]][r["outcome"]] += 1
    return out


def _smooth_max(losses, window) -> float:
    if len(losses) == 0 or not np.all(np.isfinite(losses)):
        return math.inf
    if len(losses) < window:
        return float(losses.max())
    return float(np.convolve(losses, np.ones(window) / window, mode="valid").max())
