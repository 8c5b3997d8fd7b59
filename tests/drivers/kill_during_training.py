"""Train a small deterministic run and SIGKILL this process at a chosen moment (test driver).

python kill_during_training.py LOGDIR NAME CHECKPOINT_STEPS [--kill-step K | --kill-epoch-begin E]
    [--dataset D] [--model M]
"""

import os
import signal
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras

from lrbs_tf.training.config import RunConfig
from lrbs_tf.training.run import train


class KillAt(keras.callbacks.Callback):
    def __init__(self, step=None, epoch_begin=None):
        super().__init__()
        self.step, self.epoch_begin = step, epoch_begin

    def on_train_batch_end(self, batch, logs=None):
        if self.step is not None and int(self.model.optimizer.iterations.numpy()) == self.step:
            os.kill(os.getpid(), signal.SIGKILL)

    def on_epoch_begin(self, epoch, logs=None):
        if self.epoch_begin is not None and epoch == self.epoch_begin:
            os.kill(os.getpid(), signal.SIGKILL)


def config(logdir, name, checkpoint_steps, **changes):
    settings = dict(
        lr=0.05,
        batch_size=64,
        epochs=3,
        train_size=600,
        validation_size=500,
        width=32,
        eval_batch_size=500,
        logdir=logdir,
        name=name,
        deterministic=True,
        steps_per_execution=1,
        checkpoint_steps=checkpoint_steps,
    )
    return RunConfig(**(settings | changes))


if __name__ == "__main__":
    logdir, name, ckpt = sys.argv[1], sys.argv[2], int(sys.argv[3])
    kill = {}
    if "--kill-step" in sys.argv:
        kill["step"] = int(sys.argv[sys.argv.index("--kill-step") + 1])
    if "--kill-epoch-begin" in sys.argv:
        kill["epoch_begin"] = int(sys.argv[sys.argv.index("--kill-epoch-begin") + 1])
    changes = {}
    if "--dataset" in sys.argv:
        changes = {"dataset": sys.argv[sys.argv.index("--dataset") + 1], "validation_size": 50}
        changes["train_size"] = 300
    if "--model" in sys.argv:
        changes["model"] = sys.argv[sys.argv.index("--model") + 1]
        changes["width"] = None if changes["model"].endswith(".keras") else 8  # a file: its own
    train(config(logdir, name, ckpt, **changes), callbacks=[KillAt(**kill)] if kill else [])
