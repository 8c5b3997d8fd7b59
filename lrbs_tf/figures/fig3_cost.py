"""How long a Fig. 3 sweep takes: a cost model measured on 2 CPU cores, and the clock that
shows progress, an ETA and the ``--max-minutes`` budget."""

from __future__ import annotations

import math
import time


def estimate_seconds(lr: float, batch: int, preset, num_train: int) -> float:
    """A run's expected seconds on 2 CPU cores, from the measurements in COST (``preset``: a
    :class:`lrbs_tf.figures.fig3.Preset`)."""
    epochs = preset.epochs
    if preset.loss_target is not None:
        epochs = min(epochs, _loglog(COST["epochs_to_0.05"], lr / batch))
    epoch = _loglog(COST["epoch_seconds"], batch) * num_train / 50000
    probe = COST["probe_seconds_per_example"] * preset.probe_examples
    return epochs * epoch + probe + COST["run_seconds"]


def _loglog(table, x: float) -> float:
    """Piecewise-linear interpolation in log-log of ``table`` ((x, y), ...), flat outside."""
    xs, ys = zip(*table)
    if x <= xs[0]:
        return ys[0] * (xs[0] / x) if table is COST["epochs_to_0.05"] else ys[0]
    if x >= xs[-1]:
        return ys[-1]
    for (x0, y0), (x1, y1) in zip(table, table[1:]):
        if x0 <= x <= x1:
            w = math.log(x / x0) / math.log(x1 / x0)
            return math.exp((1 - w) * math.log(y0) + w * math.log(y1))
    return ys[-1]


COST = {  # measured on 2 CPU cores with the 50000-example training set
    # epochs to a training-set loss of 0.05 against η/S (below 1e-5: ∝ 1/(η/S), as for GD)
    "epochs_to_0.05": ((1e-5, 190.0), (1e-4, 35.0), (2e-4, 30.0), (2e-3, 28.0)),
    # one epoch with its validation, test and training-set evaluations, against S
    "epoch_seconds": ((25, 5.4), (50, 4.9), (100, 3.3), (250, 2.5), (1000, 1.95)),
    "probe_seconds_per_example": 46.0 / 5000,  # λ_max, Tr H, ‖H‖_F (both), B_simple
    "run_seconds": 8.0,  # building, compiling, loading the data
}


class Clock:
    """Progress of a sweep: runs done out of the total, elapsed time, and an ETA from the cost
    model, corrected by how the finished runs compared with their estimates."""

    def __init__(self, estimates: dict, max_minutes: float | None = None):
        self.estimates = dict(estimates)  # run name -> estimated seconds (0 if finished)
        self.total = len(self.estimates)
        self.reused = {name for name, v in self.estimates.items() if v == 0}
        self.done = len(self.reused)
        self.start = time.time()
        self.max_seconds = None if max_minutes is None else 60.0 * max_minutes
        self.measured = self.expected = 0.0
        self.run_start = None

    def begin(self, config) -> None:
        """Called before a run trains; raises SweepPaused when the budget is spent."""
        from lrbs_tf.sweeps.tuning import SweepPaused

        if self.max_seconds is not None and self.elapsed() >= self.max_seconds:
            raise SweepPaused(
                f"--max-minutes {self.max_seconds / 60:g} reached after "
                f"{self.done}/{self.total} runs"
            )
        self.run_start = time.time()

    def end(self, config) -> None:
        estimate = self.estimates.get(config.run_name, 0.0)
        if self.run_start is not None and estimate:
            self.measured += time.time() - self.run_start
            self.expected += estimate
        self.estimates[config.run_name] = 0.0
        self.run_start = None
        self.done = sum(1 for v in self.estimates.values() if v == 0)

    def elapsed(self) -> float:
        return time.time() - self.start

    def remaining(self) -> float:
        """Seconds of the runs still to do, scaled by measured/expected so far."""
        scale = self.measured / self.expected if self.expected else 1.0
        return scale * sum(self.estimates.values())


def describe_minutes(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 5400 else f"{seconds / 60:.1f} min"
