"""The epoch loop of a :class:`~lrbs_tf.training.run.Run`: one ``fit`` per epoch, its record,
TensorBoard, divergence, the loss target, the checkpoint."""

from __future__ import annotations

import logging
import math
import time

import tensorflow as tf

from lrbs_tf.training import callbacks as cb
from lrbs_tf.training import checkpoint
from lrbs_tf.training.engine import fit_epoch
from lrbs_tf.training.results import EpochRecord

log = logging.getLogger(__name__)

# The loss target is checked after every epoch, and also CHECKS_NEAR_TARGET times within an
# epoch once the last check was within NEAR_TARGET × the target. Measured on the Fashion-MNIST
# MLP: near 0.05 the training-set loss falls 25-30 % per epoch at η/S = 1e-4 and 2e-3, so
# epoch-end checks alone stop runs anywhere in [0.035, 0.05]; one check costs about 0.3 s (a
# forward pass over 50000 examples), a quarter of an epoch at S = 1000.
NEAR_TARGET, CHECKS_NEAR_TARGET = 2.0, 4


def train(run, start_epoch: int, start_batch: int, metrics) -> None:
    """Epochs ``start_epoch`` … of ``run`` (the first from batch ``start_batch``, with Keras'
    running metrics at ``metrics``) until the last, divergence or the loss target."""
    config, results, parts = run.config, run.results, run.parts
    target = config.loss_target
    for epoch in range(start_epoch, config.epochs):
        run.epoch = epoch
        sizes, ratios = run.plans[epoch]
        skip = start_batch if epoch == start_epoch else 0
        extra = [cb.RestoreMetrics(metrics)] if skip and metrics else []
        check = None
        if target is not None and near_target(results.epochs, target):
            check = cb.StopAtLoss(
                run.train_set_loss,
                target,
                start=skip,
                every=math.ceil(len(sizes) / CHECKS_NEAR_TARGET),
            )
            extra.append(check)
        tick = time.time()
        before = int(run.model.optimizer.iterations.numpy()) - skip
        if skip >= len(sizes):  # stopped after the epoch's last step, before its record
            logs = logs_from_checkpoint(run, metrics)
        else:
            history = fit_epoch(
                run.model,
                parts.train_data,
                sizes,
                epoch,
                parts.callbacks + extra,
                validation_data=parts.val_ds,
                ratios=ratios,
                skip_batches=skip,
                verbose=run.verbose,
            )
            logs = {k: float(v[-1]) for k, v in history.history.items()}
        results.train_time += time.time() - tick
        steps = int(run.model.optimizer.iterations.numpy()) - before
        record = EpochRecord(epoch + 1, steps, logs.get("loss"), logs.get("accuracy"))
        if steps < len(sizes):  # stopped at the loss target within the epoch
            record.fraction = sum(sizes[:steps]) / sum(sizes)
        diverged = parts.stop.diverged_epoch is not None or not math.isfinite(record.train_loss)
        if not diverged:
            test = run.model.evaluate(parts.test_ds, verbose=0, return_dict=True)
            record.validation_loss = logs.get("val_loss")
            record.validation_accuracy = logs.get("val_accuracy")
            record.test_loss, record.test_accuracy = float(test["loss"]), float(test["accuracy"])
            if target is not None:  # the stop test reads the weights that are saved
                at_weights = (
                    check.reached if check is not None and check.reached else run.train_set_loss()
                )
                record.weights_loss = at_weights["loss"]
                record.weights_accuracy = at_weights["accuracy"]
        growth = parts.growth
        if (
            growth is not None
            and not diverged
            and epoch + 1 < config.epochs
            and not (target is not None and record.weights_loss <= target)
        ):
            record.growth = growth.decide(epoch)  # the next epoch's S, at the same η/S
            run.plan.adaptive.decided[epoch + 1] = record.growth["next_batch_size"]
            run.plans.invalidate()
        record.wall_time = run.wall_time()
        results.add(record)
        epoch_summaries(parts.writers, record, parts.marks)
        if diverged:
            results.diverged, results.diverged_epoch = True, epoch + 1
            log.warning("loss became non-finite in epoch %d: stopping", epoch + 1)
            return
        run.epoch = epoch + 1
        if target is not None and record.weights_loss <= target:
            results.loss_target_reached, results.loss_target_epoch = True, epoch + 1
            log.info(
                "training-set loss %.4g at the weights reached the target %g in epoch %d",
                record.weights_loss,
                target,
                epoch + 1,
            )
            return
        run.checkpoint_epoch_end()


def near_target(records: list, target: float) -> bool:
    """Was the training-set loss after the last epoch within NEAR_TARGET × the target?"""
    last = records[-1].get("weights_loss") if records else None
    return last is not None and last <= NEAR_TARGET * target


def logs_from_checkpoint(run, metrics) -> dict:
    """The epoch's logs when all its steps were done before the run stopped."""
    checkpoint.restore_metrics(run.model, metrics)
    logs = {k: float(v) for k, v in run.model.get_metrics_result().items()}
    val = run.model.evaluate(run.parts.val_ds, verbose=0, return_dict=True)
    logs.update({f"val_{k}": float(v) for k, v in val.items()})
    run.parts.step_scalars.flush()
    return logs


def epoch_summaries(writers: dict, record: EpochRecord, marks) -> None:
    """``epoch_loss``/``epoch_accuracy`` per split (and the training set's loss and accuracy at
    the weights, ``epoch_loss_at_weights``), unless a replay after a kill already wrote them."""
    if record.epoch <= marks.get("epoch"):
        return
    values = record.to_dict()
    for split in ("train", "validation", "test"):
        with writers[split].as_default(step=record.epoch), tf.summary.record_if(True):
            for metric in ("loss", "accuracy"):
                value = values.get(f"{split}_{metric}")
                if value is not None and math.isfinite(value):
                    tf.summary.scalar(f"epoch_{metric}", value)
                if split == "train" and values.get(f"weights_{metric}") is not None:
                    tf.summary.scalar(f"epoch_{metric}_at_weights", values[f"weights_{metric}"])
        writers[split].flush()
    marks.set("epoch", record.epoch)
