"""The Keras callbacks of a run's ``fit``: a progress bar over all epochs, the loss target checked
within an epoch, checkpoints every K steps, Keras' running metrics restored in a resumed epoch,
and the multi-worker watchdog's heartbeat. (The per-step TensorBoard writer is
:class:`lrbs_tf.training.tensorboard.StepScalars`.)"""

from __future__ import annotations

import keras

from lrbs_tf import distribute


class EpochProgbar(keras.callbacks.ProgbarLogger):
    """Keras' progress bar, numbering epochs out of the whole run when ``fit`` runs one epoch."""

    def __init__(self, total_epochs: int):
        super().__init__()
        self.total_epochs = total_epochs

    def set_params(self, params):
        super().set_params(params)
        self.epochs = self.total_epochs


class StopAtLoss(keras.callbacks.Callback):
    """Within an epoch, every ``every`` steps, measure ``loss_at_weights()`` (a dict with
    ``loss``) and stop training when it is at most ``target``; the measurement that stopped it
    is kept in ``reached``. ``start``: batches of the epoch already done (a resumed epoch)."""

    def __init__(self, loss_at_weights, target: float, every: int, start: int = 0):
        super().__init__()
        self.loss_at_weights, self.target, self.every = loss_at_weights, target, max(1, every)
        self.start = start
        self.reached = None

    def on_epoch_begin(self, epoch, logs=None):
        self.next = self.start + self.every

    def on_train_batch_end(self, batch, logs=None):
        done = self.start + batch + 1
        if done < self.next:
            return
        self.next = done + self.every
        measured = self.loss_at_weights()
        if measured["loss"] <= self.target:
            self.reached = measured
            self.model.stop_training = True


class CheckpointEvery(keras.callbacks.Callback):
    """Call ``save()`` every ``steps`` optimizer steps inside an epoch.

    A batch-level hook makes Keras synchronise after every call of the train function; the
    training loop adds this callback only when mid-epoch checkpoints are asked for.
    """

    def __init__(self, steps: int, save):
        super().__init__()
        self.steps, self.save = steps, save
        self._last = None

    def on_train_batch_end(self, batch, logs=None):
        step = int(self.model.optimizer.iterations.numpy())
        if self._last is None or step < self._last:
            self._last = step - (step % self.steps)
        if step - self._last >= self.steps:
            self._last = step
            self.save()


class RestoreMetrics(keras.callbacks.Callback):
    """Put Keras' running metrics back to checkpointed values when an epoch is resumed."""

    def __init__(self, values):
        super().__init__()
        self.values = values

    def on_epoch_begin(self, epoch, logs=None):  # Keras resets the metrics just before this
        from lrbs_tf.training.checkpoint import restore_metrics

        restore_metrics(self.model, self.values)


class Heartbeat(keras.callbacks.Callback):
    """Tells the multi-worker watchdog (:mod:`lrbs_tf.distribute`) that steps complete."""

    def on_train_batch_end(self, batch, logs=None):
        distribute.heartbeat("training")

    def on_test_batch_end(self, batch, logs=None):
        distribute.heartbeat("evaluating")

    def on_epoch_end(self, epoch, logs=None):
        distribute.heartbeat("between epochs")
