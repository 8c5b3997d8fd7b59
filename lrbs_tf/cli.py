"""Shared command-line plumbing: one-line errors with exit status 2, quiet TensorFlow start-up."""
from __future__ import annotations

import argparse
import contextlib
import os
import sys


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line (no usage block) and exits with status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def fail(prog: str, message: str, status: int = 2):
    """Print ``prog: error: message`` (one line) to stderr and exit."""
    sys.stderr.write(f"{prog}: error: {' '.join(str(message).split())}\n")
    sys.exit(status)


def quiet_tensorflow() -> None:
    """Silence TensorFlow's C++ info logs; call before TensorFlow is imported."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def add_run_flags(parser, epochs: int, logdir: str) -> None:
    """Flags shared by the figure scripts: what every run of the figure has in common."""
    parser.add_argument("--epochs", type=int, default=epochs)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default="mlp")
    parser.add_argument("--width", type=int, default=256, help="hidden width of the MLP")
    parser.add_argument("--dataset", default="fashion_mnist")
    parser.add_argument("--data-dir")
    parser.add_argument("--train-size", type=int, help="train on a seeded subset of this size")
    parser.add_argument("--validation-size", type=int, help="default: 10000 Fashion-MNIST, 5000 CIFAR-10")
    parser.add_argument("--augment", action="store_true", help="4-pixel shifts and flips")
    parser.add_argument("--logdir", default=logdir, help="folder for the runs, table and PNG")
    parser.add_argument("--overwrite", action="store_true",
                        help="retrain runs whose folders hold other settings")
    parser.add_argument("--deterministic", action="store_true",
                        help="TensorFlow op determinism (bitwise-repeatable runs)")


    add_distribute_flags(parser)


def add_distribute_flags(parser) -> None:
    """``--strategy``, ``--devices``, ``--cpu-devices``, ``--peer-timeout`` (see
    :mod:`lrbs_tf.distribute`)."""
    from lrbs_tf.distribute import STRATEGIES

    g = parser.add_argument_group("devices (tf.distribute)")
    g.add_argument("--strategy", default="auto", choices=STRATEGIES,
                   help="auto: MirroredStrategy when more than one GPU is visible, else none; "
                        "multiworker: MultiWorkerMirroredStrategy from TF_CONFIG (see "
                        "tools/launch_workers.py)")
    g.add_argument("--devices", help="devices for MirroredStrategy, e.g. /gpu:0,/gpu:1 "
                   "(default: all GPUs, else all logical CPUs)")
    g.add_argument("--cpu-devices", type=int, default=0, metavar="N",
                   help="split the CPU into N logical devices (try multi-device code without "
                        "GPUs)")
    g.add_argument("--peer-timeout", type=float, default=300.0, metavar="SECONDS",
                   help="multiworker: give up after this long without progress (a dead peer)")


def split_cpu_now(prog: str, args) -> None:
    """``--cpu-devices N``: split the CPU before anything starts TensorFlow (keras-tuner does
    before the first run; :func:`lrbs_tf.train.train` splits it too, for the other scripts)."""
    if args.cpu_devices:
        from lrbs_tf.distribute import DistributeError, split_cpu

        try:
            split_cpu(args.cpu_devices)
        except DistributeError as e:
            fail(prog, e)


def refuse_multiworker_sweep(prog: str, args) -> None:
    """keras-tuner sweeps run their trials with ``--strategy mirrored`` at most."""
    if args.strategy == "multiworker":
        fail(prog, "--strategy multiworker is not supported by keras-tuner sweeps: spread the "
                   "trials over machines with keras-tuner's distributed mode "
                   "(tools/launch_tuner.py) and use --strategy mirrored for each machine's GPUs")


def distribute_kwargs(args) -> dict:
    """RunConfig keyword arguments from the flags of :func:`add_distribute_flags`."""
    return dict(strategy=args.strategy, devices=args.devices, cpu_devices=args.cpu_devices,
                peer_timeout=args.peer_timeout)


def run_kwargs(args) -> dict:
    """RunConfig keyword arguments from the flags of :func:`add_run_flags`."""
    return dict(epochs=args.epochs, seed=args.seed, model=args.model, width=args.width,
                dataset=args.dataset, data_dir=args.data_dir, train_size=args.train_size,
                validation_size=args.validation_size, logdir=args.logdir,
                overwrite=args.overwrite, deterministic=args.deterministic,
                augment=args.augment, **distribute_kwargs(args))


def percent(value) -> str:
    """``0.8731`` → ``87.31%``; ``None`` → ``-``."""
    return "-" if value is None else f"{100 * value:.2f}%"


def format_table(header, rows) -> str:
    """A plain-text table with columns padded to their widest cell."""
    cells = [list(map(str, header))] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells)


# Exit statuses of the command-line tools (also in the README).
EXIT_BAD_INPUT = 2  # a bad flag, bad data, a damaged run folder or one holding something else
EXIT_DISK_FULL = 74  # sysexits' EX_IOERR: the run is marked failed and resumes with space
EXIT_BUSY = 75  # sysexits' EX_TEMPFAIL: another process holds the run folder
EXIT_INTERRUPTED = 130


@contextlib.contextmanager
def reported_errors(prog: str, logdir: str):
    """Turn the library's expected failures into one-line messages and exit statuses.

    Bad data, a run folder holding something else or damaged, a damaged checkpoint or a
    strategy that cannot be set up: status 2. Another process using the run folder: 75. A full
    disk: 74. A multi-worker peer lost: 3. Ctrl-C: 130 (the run's state is saved when training
    had started). An unwritable log directory: 1. Usable before TensorFlow is imported.
    """
    from lrbs_tf.data import DataError
    from lrbs_tf.distribute import DistributeError
    from lrbs_tf.runfolder import RunBusyError
    from lrbs_tf.runio import DiskFullError, RunFolderError, disk_full

    try:
        yield
    except RunBusyError as e:
        fail(prog, e, status=EXIT_BUSY)
    except (DataError, RunFolderError, DistributeError) as e:
        fail(prog, e)
    except KeyboardInterrupt:
        fail(prog, "interrupted before training started; nothing to resume",
             status=EXIT_INTERRUPTED)
    except DiskFullError as e:
        fail(prog, e.strerror or e, status=EXIT_DISK_FULL)
    except OSError as e:
        if disk_full(e):
            fail(prog, f"the disk of {logdir} is full ({e.strerror or e}); free some space "
                       "and run the same command again", status=EXIT_DISK_FULL)
        fail(prog, f"{e.strerror or e} ({e.filename or logdir}): check that {logdir} is "
                   "writable", status=1)
    except Exception as e:
        if "tensorflow" not in sys.modules:
            raise
        _tensorflow_error(prog, e)
        raise


def _tensorflow_error(prog: str, e: Exception) -> None:
    """Interruptions and lost peers, which are raised once TensorFlow is running."""
    import tensorflow as tf

    from lrbs_tf.distribute import PEER_LOST_EXIT
    from lrbs_tf.train import RunInterrupted

    if isinstance(e, RunInterrupted):
        fail(prog, e, status=EXIT_INTERRUPTED)
    if isinstance(e, (tf.errors.UnavailableError, tf.errors.DeadlineExceededError,
                      tf.errors.CancelledError, tf.errors.AbortedError)):
        # what a collective raises when another worker died or never answered
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        telling = [ln for ln in lines if any(w in ln for w in (
            "unhealthy", "crashed", "Error reported", "Deadline", "onnect", "timed out"))]
        reason = (telling or lines or [type(e).__name__])[0]
        fail(prog, f"lost contact with another worker ({type(e).__name__}: {reason[:300]}); "
                   "start all workers again to resume from the chief's last checkpoint",
             status=PEER_LOST_EXIT)


def run_all(prog: str, logdir: str, labelled_configs, report) -> list[dict]:
    """Train (or reuse, or resume) each ``(label, config)`` in turn, passing ``[i/n] label``
    with an ETA to ``report`` (the CLI's ``print``); library failures become one-line messages
    (see :func:`reported_errors`). Under ``--strategy multiworker`` a worker other than the
    chief exits (status 0) once the runs are done: the chief writes the figure's outputs."""
    import time

    from lrbs_tf import distribute
    from lrbs_tf.train import train  # reuses finished runs, resumes killed ones

    with reported_errors(prog, logdir):
        chief = (not any(c.strategy == "multiworker" for _, c in labelled_configs)
                 or distribute.chief_task())
    if chief:
        os.makedirs(logdir, exist_ok=True)
    results, tick = [], time.time()
    for i, (label, config) in enumerate(labelled_configs):
        elapsed = time.time() - tick
        eta = f", ETA {elapsed / i * (len(labelled_configs) - i) / 60:.1f} min" if i else ""
        report(f"[{i + 1}/{len(labelled_configs)}] {label} (elapsed {elapsed / 60:.1f} min{eta})")
        with reported_errors(prog, logdir):
            results.append(train(config))
    if not chief:  # multi-worker: the chief alone writes the tables and figures
        report("this worker's part is done; the chief (worker 0) writes the tables and figures")
        sys.exit(0)
    return results
