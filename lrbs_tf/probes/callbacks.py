"""The sharpness of any ``model.fit``, every few epochs: one line in your callbacks.

    from lrbs_tf.callbacks import Sharpness

    history = model.fit(train_ds, epochs=20,
                        callbacks=[Sharpness((x_train, y_train), every=1, log_dir="tb/probe")])
    history.history["step_sharpness"], history.history["width_sharpness"]

Each probe measures (see :class:`~lrbs_tf.probes.prober.Prober`) the width sharpness
(BatchNorm in inference mode), the step sharpness (BatchNorm statistics of mini-batches of the
training batch size S) next to 2/η, Tr H with its standard error, B_simple with its standard
error and its own cost in seconds; adds them to the logs of the epochs it probes (so to
``history``); writes one point per quantity and probe to TensorBoard (``log_dir``, at Keras'
epoch index: 0 after the first epoch, as Keras' own TensorBoard callback), with a "Custom
Scalars" chart of the step sharpness against 2/η (written to ``log_dir`` + ``_2_over_lr``, a
run of its own, so that it has its own colour); and reports a line on the ``lrbs_tf`` logger.
Every function it compiles is traced once per model (once more when ``max_overhead`` grows the
probe after the first).

**What it costs you.** With ``max_overhead`` (default 0.1) the probes take at most about that
fraction of the training time (the epochs' time, probes excluded): the first probe, after the
first epoch of ``every``, is a small one on ``min(examples, 64)`` examples, tracing included
(on a short fit it alone can exceed the fraction); from its cost per example (its HVPs' time;
the rest was tracing) the callback picks the examples of the rest (as many as one probe
per ``every`` epochs allows, between 64 and ``examples``) and then probes at an epoch of
``every`` only when the probes so far plus one more stay within ``max_overhead`` × the training
time so far — so on a model whose probe costs many epochs, it probes less often. It logs what it
chose. ``max_overhead=None``: every ``every`` epochs on ``examples`` examples, whatever it costs.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time

import keras
import numpy as np

from lrbs_tf.probes import sampling
from lrbs_tf.probes.prober import Prober
from lrbs_tf.probes.settings import ProbeSettings

log = logging.getLogger(__name__)

TAGS = (
    "width_sharpness",
    "width_sharpness_stderr",
    "step_sharpness",
    "step_sharpness_stderr",
    "stability_2_over_lr",
    "trace",
    "trace_stderr",
    "frobenius",
    "frobenius_stderr",
    "frobenius_fd",
    "b_simple",
    "b_simple_stderr",
    "trace_c",
    "grad_norm_sq",
    "seconds",
)
LOGGED = (
    "width_sharpness",
    "width_sharpness_stderr",
    "step_sharpness",
    "step_sharpness_stderr",
    "stability_2_over_lr",
    "trace",
    "trace_stderr",
    "b_simple",
    "b_simple_stderr",
)


LIMIT_RUN = "_2_over_lr"  # the run (folder) of 2/η: the probe folder's name with this added
LIMIT_TAG = "stability_2_over_lr"


def write_scalars(writer, record: dict, step: int, limit_writer=None) -> None:
    """A measurement's values under ``probe/`` in TensorBoard at ``step``, Keras' epoch index
    (0 after the first epoch); 2/η goes to ``limit_writer`` when given — another run, so that
    TensorBoard draws it in another colour than the step sharpness it is compared with."""
    import tensorflow as tf

    for out, tags in (
        (writer, [t for t in TAGS if limit_writer is None or t != LIMIT_TAG]),
        (limit_writer, [LIMIT_TAG] if limit_writer is not None else []),
    ):
        if not tags:
            continue
        with out.as_default(step=step), tf.summary.record_if(True):
            for tag in tags:
                value = record.get(tag)
                if value is not None and math.isfinite(value):
                    tf.summary.scalar(f"probe/{tag}", value)
        out.flush()


def report_probe(record: dict, epoch: int) -> None:
    """One line on the ``lrbs_tf`` logger for a probe after ``epoch`` (1-based)."""
    log.info(
        "epoch %d: width sharpness %s, step sharpness %s (2/η = %.4g), Tr H %s, B_simple %s; "
        "%.1f s",
        epoch,
        sampling.text(record, "width_sharpness"),
        sampling.text(record, "step_sharpness"),
        record.get("stability_2_over_lr", math.nan),
        sampling.text(record, "trace"),
        sampling.text(record, "b_simple"),
        record["seconds"],
    )


def write_layout(writer) -> None:
    """TensorBoard's "Custom Scalars" layout: the step sharpness on one chart with 2/η (the
    linear-stability line, in a run of its own and so in its own colour; the runs list is the
    legend), and the width sharpness on its own."""
    import tensorflow as tf
    from tensorboard.plugins.custom_scalar import layout_pb2
    from tensorboard.plugins.custom_scalar import summary as cs_summary

    def chart(title, *tags):
        return layout_pb2.Chart(
            title=title,
            multiline=layout_pb2.MultilineChartContent(tag=[rf"^probe/{t}$" for t in tags]),
        )

    layout = layout_pb2.Layout(
        category=[
            layout_pb2.Category(
                title="sharpness",
                chart=[
                    chart(
                        f"step sharpness (run probe) against 2/η (run probe{LIMIT_RUN}): stable "
                        "below the line",
                        "step_sharpness",
                        LIMIT_TAG,
                    ),
                    chart("width sharpness (BatchNorm inference)", "width_sharpness"),
                    chart("B_simple (the simple noise scale)", "b_simple"),
                ],
            )
        ]
    )
    with writer.as_default(), tf.summary.record_if(True):
        tf.summary.experimental.write_raw_pb(cs_summary.pb(layout).SerializeToString(), step=0)
    writer.flush()


class Sharpness(keras.callbacks.Callback):
    """Probe the model every ``every`` epochs (see the module docstring).

    Args:
        data: ``(x, y)`` training examples (arrays) the probes draw their fixed subsets from.
        every: epochs between probes (the least, with ``max_overhead``).
        batch_size: S of the step sharpness (default: the global batch of the epoch's first
            step when the optimizer is :class:`~lrbs_tf.core.optimizers.RatioScaledOptimizer`,
            the nominal S — a ragged last batch is not it; else no step sharpness).
        examples, noise_examples: probe subset sizes (curvature; gradient noise): the most,
            with ``max_overhead``.
        max_overhead: the probes' time at most about this fraction of the training time (see
            the module docstring); None: no limit. Not used with a given ``prober`` (its
            examples are fixed).
        log_dir: TensorBoard folder for the ``probe/*`` scalars (none: no TensorBoard).
        settings: a full :class:`~lrbs_tf.probes.settings.ProbeSettings` instead.
        lr_at: ``epoch -> η`` for 2/η (default: η of the epoch's first step, ratio × S, with
            a RatioScaledOptimizer; else the optimizer's learning rate).
        full: also the finite-difference ‖H‖_F and more trace samples (slower).
    """

    def __init__(
        self,
        data=None,
        every: int = 1,
        batch_size: int | None = None,
        examples: int = 2000,
        noise_examples: int = 500,
        log_dir: str | None = None,
        settings: ProbeSettings | None = None,
        lr_at=None,
        full: bool = False,
        prober: Prober | None = None,
        writer=None,
        max_overhead: float | None = 0.1,
    ):
        super().__init__()
        if max_overhead is not None and not max_overhead > 0:
            raise ValueError(f"max_overhead must be above 0 (or None), got {max_overhead}")
        if prober is None and data is None:
            raise ValueError("Sharpness needs the training data (x, y) or a Prober")
        self.data, self.every, self.batch_size = data, int(every), batch_size
        self.settings = settings or ProbeSettings(
            examples=min(examples, len(data[1])) if data is not None else examples,
            noise_examples=min(noise_examples, examples),
            finite_difference=full,
        )
        self.log_dir, self.lr_at, self.full = log_dir, lr_at, full
        self.prober, self.writer = prober, writer
        self.limit_writer = None  # 2/η's own run, next to log_dir
        self.history = []  # every measurement, with its epoch
        self._nominal = None  # (S, η) after the epoch's first step (RatioScaledOptimizer)
        self.max_overhead = max_overhead if prober is None else None  # a given Prober: as is
        self.train_seconds = self.probe_seconds = 0.0  # the epochs' time; the probes'
        self.epochs_timed = 0
        self.probe_cost = None  # seconds of the next probe (None before the first)
        self._epoch_start = None
        if self.max_overhead is not None:  # the first probe is a small one
            self._first_settings = self.settings
            self.settings = dataclasses.replace(
                self.settings,
                examples=min(self.settings.examples, FIRST_EXAMPLES),
                noise_examples=min(self.settings.noise_examples, FIRST_EXAMPLES),
            )

    def on_train_begin(self, logs=None):
        if self.writer is None and self.log_dir:
            import tensorflow as tf

            self.writer = tf.summary.create_file_writer(self.log_dir)
            limit = os.path.normpath(self.log_dir) + LIMIT_RUN
            self.limit_writer = tf.summary.create_file_writer(limit)
            write_layout(self.writer)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        if batch == 0:  # S and η of the epoch's full batches (once per epoch)
            self._nominal = _ratio_step(self.model)

    def on_epoch_end(self, epoch, logs=None):
        if self._epoch_start is not None:
            self.train_seconds += time.perf_counter() - self._epoch_start
            self.epochs_timed += 1
        if (epoch + 1) % self.every:
            return
        if self.max_overhead is not None and not affordable(
            self.probe_seconds, self.probe_cost, self.train_seconds, self.max_overhead
        ):
            return
        tick = time.perf_counter()
        record = self.measure(epoch)
        self.probe_seconds += time.perf_counter() - tick
        if self.max_overhead is not None:
            self._plan(record, max(self.epochs_timed, 1))
        if logs is not None:
            logs.update({k: record[k] for k in LOGGED if k in record})
            logs["sharpness_seconds"] = record["seconds"]

    def measure(self, epoch: int) -> dict:
        """Probe now (after 0-based ``epoch``), log, record and write one point per tag."""
        prober = self._prober()
        lr = self.lr_at(epoch) if self.lr_at else self._nominal_lr()
        log.info(
            "probing sharpness after epoch %d on %d examples (S = %s)",
            epoch + 1,
            prober.settings.examples,
            prober.step_batch or "none",
        )
        record = prober(lr=lr, full=self.full)
        record["epoch"], record["examples"] = epoch + 1, prober.settings.examples
        self.history.append(record)
        if self.writer is not None:  # at Keras' epoch index, as its TensorBoard callback
            write_scalars(self.writer, record, epoch, self.limit_writer)
        report_probe(record, epoch + 1)
        return record

    def _plan(self, record: dict, epochs: int) -> None:
        """After the first probe: the examples of the rest and their cost (logged); after
        the others: the cost of the next, that of the last."""
        if self.probe_cost is not None:
            self.probe_cost = record["seconds"]
            return
        from lrbs_tf.probes.prober import pass_cost

        first = self.settings.examples
        # the probe's work grows with its examples; the rest of its time was tracing
        work = min(record.get("hvp_seconds", 0.0) * pass_cost(self.settings, record, self.full),
                   record["seconds"])  # fmt: skip
        tracing = record["seconds"] - work if work else 0.0
        per_example = (work or record["seconds"]) / first
        examples = examples_within(
            per_example,
            self.max_overhead * self.train_seconds / epochs * self.every,
            first,
            self._first_settings.examples,
        )
        self.probe_cost = per_example * examples
        if examples != first:  # a new subset: traced again at the next probe
            self.settings = dataclasses.replace(
                self._first_settings,
                examples=examples,
                noise_examples=min(self._first_settings.noise_examples, examples),
            )
            self.prober = None
            self.probe_cost += tracing
        log.info(
            "Sharpness: the first probe took %.1f s on %d examples (tracing included) after "
            "%.1f s of training; within %g of the training time the next ones take %d "
            "examples, about every %d epochs",
            record["seconds"],
            first,
            self.train_seconds,
            self.max_overhead,
            examples,
            epochs_between(
                self.probe_cost, self.train_seconds / epochs, self.max_overhead, self.every
            ),
        )

    def _nominal_lr(self) -> float | None:
        """η of the epoch's full batches: read after its first step (the last step of an epoch
        may be a smaller, ragged batch, whose η = ratio × its size is not the step SGD took)."""
        return self._nominal[1] if self._nominal else _learning_rate(self.model)

    def _prober(self) -> Prober:
        if self.prober is None:
            x, y = self.data
            batch = self.batch_size or (self._nominal or (_ratio_batch(self.model),))[0]
            if batch is None:
                log.warning("Sharpness: no batch size for the step sharpness (pass batch_size=)")
            self.prober = Prober(
                self.model, np.asarray(x), np.asarray(y), self.settings, step_batch=batch
            )
        return self.prober


FIRST_EXAMPLES = 64  # the first probe under max_overhead: small, as its cost is unknown


def affordable(probe_seconds: float, cost, train_seconds: float, max_overhead: float) -> bool:
    """May the callback probe now? Always the first time (``cost`` None: it prices the rest);
    then while the probes so far and one more of ``cost`` seconds stay within
    ``max_overhead`` × the training time so far."""
    return cost is None or probe_seconds + cost <= max_overhead * train_seconds


def examples_within(per_example: float, budget: float, least: int, most: int) -> int:
    """The examples one probe of ``budget`` seconds allows at ``per_example`` seconds each,
    between ``least`` and ``most``."""
    return int(min(max(budget / max(per_example, 1e-12), least), most))


def epochs_between(cost: float, epoch_seconds: float, max_overhead: float, every: int) -> int:
    """About how many epochs apart probes of ``cost`` seconds come (a multiple of ``every``)."""
    apart = math.ceil(cost / max(max_overhead * epoch_seconds, 1e-12))
    return max(every, every * math.ceil(apart / every))


def _learning_rate(model) -> float | None:
    try:
        return float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
    except (AttributeError, TypeError, ValueError):
        return None


def _ratio_step(model) -> tuple[int, float] | None:
    """``(S, η)`` of the step just taken by a :class:`RatioScaledOptimizer`, else None."""
    batch = _ratio_batch(model)
    if batch is None:
        return None
    return batch, float(model.optimizer.ratio.numpy()) * batch


def _ratio_batch(model) -> int | None:
    from lrbs_tf.core.optimizers import RatioScaledOptimizer

    optimizer = getattr(model, "optimizer", None)
    if isinstance(optimizer, RatioScaledOptimizer) and optimizer.built:
        size = int(round(float(optimizer.batch_size.numpy())))
        return size or None
    return None
