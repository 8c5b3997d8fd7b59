"""Train a small deterministic run and send this process a signal at an exact moment (test
driver): during the validation pass of epoch E, the instant epoch E's line is logged (between
its record and its checkpoint), or during the final probe.

python stop_during_training.py LOGDIR NAME [SIGNAL WHEN]   # WHEN: validation:E | line:E | probe
"""

import logging
import os
import signal
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras

from lrbs_tf.cli.common import setup_logging
from lrbs_tf.probes.settings import ProbeSettings
from lrbs_tf.training.config import RunConfig
from lrbs_tf.training.run import train


def stop():
    os.kill(os.getpid(), getattr(signal, f"SIG{sys.argv[3]}"))


class DuringValidation(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch, self.seen = epoch, 0

    def on_epoch_end(self, epoch, logs=None):
        self.seen = epoch + 1

    def on_test_batch_end(self, batch, logs=None):
        if self.seen == self.epoch and batch == 0:
            stop()


class OnLine(logging.Handler):
    def __init__(self, fragment):
        super().__init__()
        self.fragment = fragment

    def emit(self, record):
        if self.fragment in record.getMessage():
            self.fragment = "\0never"
            stop()


def config(logdir, name):
    return RunConfig(
        lr=0.05,
        batch_size=64,
        epochs=3,
        train_size=600,
        validation_size=500,
        width=32,
        eval_batch_size=100,
        logdir=logdir,
        name=name,
        deterministic=True,
        steps_per_execution=1,
        probe=ProbeSettings(examples=200, noise_examples=50, lanczos_max_steps=10),
    )


if __name__ == "__main__":
    setup_logging()
    logdir, name = sys.argv[1], sys.argv[2]
    callbacks = []
    if len(sys.argv) > 3:
        when, _, epoch = sys.argv[4].partition(":")
        if when == "validation":
            callbacks.append(DuringValidation(int(epoch)))
        else:
            fragment = f": epoch {epoch}/" if when == "line" else "probing curvature"
            logging.getLogger("lrbs_tf").addHandler(OnLine(fragment))
    try:
        train(config(logdir, name), callbacks=callbacks, progress="epoch")
    except KeyboardInterrupt as e:
        sys.stderr.write(f"stopped: {e}\n")
        sys.exit(128 + getattr(e, "signum", 2))
