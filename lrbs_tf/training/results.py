"""What a run records, as typed records: one :class:`EpochRecord` per epoch and the
:class:`RunResults` written to ``results.json`` (by :meth:`lrbs_tf.training.run.Run.write`,
the one place that writes it). ``to_dict`` leaves out what was not measured, so the JSON of a
run holds only real values."""

from __future__ import annotations

import dataclasses


def _present(record) -> dict:
    return {k: v for k, v in dataclasses.asdict(record).items() if v is not None}


def ranges_run(records: list[dict]) -> dict:
    """``{"batch_size"|"lr"|"ratio": (lowest, highest)}`` over the epoch records that say what
    they ran at (within-epoch ranges included); empty when none does."""
    out = {}
    for key in ("batch_size", "lr", "ratio"):
        values = [
            v for r in records if key in r for v in (r.get("within_epoch") or {}).get(key, [r[key]])
        ]
        if values:
            out[key] = (min(values), max(values))
    return out


@dataclasses.dataclass
class EpochRecord:
    """One epoch: its steps and what they ran at (S, η and η/S of its first step, their ranges
    when they change within the epoch: :func:`~lrbs_tf.core.plan.step_values`), Keras' running
    means of the training loss and accuracy, validation and test metrics, the loss and accuracy
    over the training set at the weights it ended with (when a loss target is checked), and the
    run's wall time so far."""

    epoch: int
    steps: int
    batch_size: int | None = None
    lr: float | None = None
    ratio: float | None = None
    within_epoch: dict | None = None  # {"batch_size"|"lr"|"ratio": [lowest, highest]}
    train_loss: float | None = None
    train_accuracy: float | None = None
    validation_loss: float | None = None
    validation_accuracy: float | None = None
    test_loss: float | None = None
    test_accuracy: float | None = None
    weights_loss: float | None = None
    weights_accuracy: float | None = None
    fraction: float | None = None  # of the epoch's examples, when a loss target stopped it
    growth: dict | None = None  # --bs-schedule adaptive: the measurement and the next S
    wall_time: float | None = None

    def to_dict(self) -> dict:
        return _present(self)


@dataclasses.dataclass
class RunResults:
    """Everything ``results.json`` holds about a run (see the README's run folder table)."""

    run_dir: str
    status: str = "running"  # running | finished | diverged | interrupted | failed
    model: dict | None = None  # its parameter count and the options passed to its builder
    measured_model: str | None = None  # when the inference-mode model is not the trained one
    data_source: str | None = None  # where the data came from (SYNTHETIC for the stand-in)
    synthetic_data: bool | None = None  # True for a generated stand-in, not real data
    distribute: dict = dataclasses.field(default_factory=dict)
    epochs: list = dataclasses.field(default_factory=list)  # of EpochRecord dicts
    diverged: bool = False
    diverged_epoch: int | None = None
    train_time: float = 0.0
    wall_time: float = 0.0
    resumed: int = 0
    error: str | None = None
    probe_history: list | None = None
    # once finished
    best_epoch: int | None = None
    best_validation_accuracy: float | None = None
    test_accuracy_at_best: float | None = None
    best_test_accuracy: float | None = None
    final_train_loss: float | None = None
    final_validation_accuracy: float | None = None
    final_test_accuracy: float | None = None
    final_test_loss: float | None = None
    final_weights_loss: float | None = None
    final_weights_accuracy: float | None = None
    loss_target: float | None = None
    loss_target_reached: bool | None = None
    loss_target_epoch: int | None = None
    loss_reached: float | None = None
    probe: dict | None = None
    epochs_trained: float | None = None
    examples_per_second: float | None = None
    weights_sha1: str | None = None
    model_bytes: int | None = None
    model_sha1: str | None = None

    @classmethod
    def from_dict(cls, data: dict) -> RunResults:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def to_dict(self) -> dict:
        out = _present(self)
        out.setdefault("diverged_epoch", None)  # always there, as the tools expect
        return out

    def add(self, record: EpochRecord) -> None:
        self.epochs.append(record.to_dict())
        self.wall_time = record.wall_time

    def summarize(self) -> None:
        """The best and final epoch's metrics (over epochs with a validation accuracy)."""
        measured = [r for r in self.epochs if r.get("validation_accuracy") is not None]
        if not measured:
            return
        best = max(measured, key=lambda r: r["validation_accuracy"])
        final = measured[-1]
        self.best_epoch = best["epoch"]
        self.best_validation_accuracy = best["validation_accuracy"]
        self.test_accuracy_at_best = best["test_accuracy"]
        self.best_test_accuracy = max(r["test_accuracy"] for r in measured)
        self.final_train_loss = final["train_loss"]
        self.final_validation_accuracy = final["validation_accuracy"]
        self.final_test_accuracy = final["test_accuracy"]
        self.final_test_loss = final["test_loss"]


# When the model the probes measure is not the model SGD trained -------------------------------

LOSS_FACTOR, LOSS_GAP = 2.0, 0.1  # loss at the weights > 2 × the running loss and 0.1 above it
ACCURACY_GAP = 0.2  # accuracy at the weights this far below the running accuracy


def measured_model_problem(results: RunResults, classes: int, batchnorm: dict | None) -> str | None:
    """One line when the model as the probes measure it (inference mode: BatchNorm's moving
    statistics, Dropout off) is not the model SGD trained, else None. Signs: the loss over the
    training set at the weights above :data:`LOSS_FACTOR` × the last epoch's running training
    loss and :data:`LOSS_GAP` above it; its accuracy :data:`ACCURACY_GAP` below the running
    accuracy; or test accuracy near chance (at most 1.5/classes) while the running accuracy is
    at least 3/classes. ``batchnorm``: ``{"momentum": …, "steps": …}`` of the model's
    BatchNorm layers (the likely cause), None without BatchNorm."""
    if not results.epochs or results.final_weights_loss is None:
        return None
    last = results.epochs[-1]
    running_loss, running_acc = last.get("train_loss"), last.get("train_accuracy")
    loss, acc, test = (
        results.final_weights_loss,
        results.final_weights_accuracy,
        results.final_test_accuracy,
    )
    signs = []
    if (
        running_loss is not None
        and loss > LOSS_FACTOR * running_loss
        and loss > running_loss + LOSS_GAP
    ):
        signs.append(f"loss {loss:.3g} at the weights against {running_loss:.3g} while training")
    if running_acc is not None and acc is not None and acc < running_acc - ACCURACY_GAP:
        signs.append(f"training accuracy {acc:.1%} at the weights against {running_acc:.1%}")
    if running_acc is not None and test is not None and test <= 1.5 / classes <= running_acc / 2:
        signs.append(f"test accuracy {test:.1%}, near chance ({1 / classes:.1%})")
    if not signs:
        return None
    return (
        "the model measured in inference mode is not the model SGD trained ("
        + "; ".join(signs)
        + "): probes, the equal-loss check and the advisor see the inference-mode model. "
        + _likely_cause(batchnorm)
    )


def _likely_cause(batchnorm: dict | None) -> str:
    if not batchnorm:
        return "Likely cause: Dropout or another layer that acts differently in inference."
    momentum, steps = batchnorm["momentum"], batchnorm["steps"]
    span = 1 / (1 - momentum)
    cause = (
        f"Likely cause: BatchNorm's moving statistics (momentum {momentum:g}, an average over "
        f"about {span:.0f} steps) after {steps} steps"
    )
    if momentum > 0.9:
        return cause + "; use momentum 0.9 or train longer."
    if steps < 3 * span:
        return cause + "; train longer."
    return (  # the average had time: it lags weights that move fast, or batches that vary
        cause + ", lagging weights that still move fast; train longer or at a smaller η, or "
        "probe each batch's own statistics (tools/probe.py RUN --bn batch)."
    )
