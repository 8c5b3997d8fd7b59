"""Shared command-line plumbing: one-line errors with exit status 2, quiet TensorFlow start-up."""

from __future__ import annotations

import argparse
import atexit
import codecs
import contextlib
import functools
import os
import re
import sys
import threading

from lrbs_tf.training.config import PLACEMENT  # pure Python, no TensorFlow


def program(script: str) -> str:
    """The name a command reports itself under: ``lrbs-run`` (entry point), ``lrbs_tf run``
    (``python -m lrbs_tf``), else the script's own name (``run.py``)."""
    name = os.path.basename(sys.argv[0]) if sys.argv else ""
    return name if name.startswith("lrbs") else script


# Spellings for streams that cannot encode the characters our output uses (PYTHONIOENCODING=ascii,
# a latin-1 terminal): η/S reads eta/S there instead of failing with UnicodeEncodeError.
ASCII = {
    "η": "eta",
    "λ": "lambda",
    "ρ": "rho",
    "θ": "theta",
    "α": "alpha",
    "β": "beta",
    "ε": "eps",
    "σ": "sigma",
    "Σ": "sum",
    "Δ": "Delta",
    "μ": "mu",
    "‖": "||",
    "²": "^2",
    "×": "x",
    "±": "+-",
    "≤": "<=",
    "≥": ">=",
    "≈": "~",
    "→": "->",
    "←": "<-",
    "↔": "<->",
    "…": "...",
    "·": "*",
    "√": "sqrt",
    "∞": "inf",
    "—": "--",
    "–": "-",
    "’": "'",
    "“": '"',
    "”": '"',
    "∈": "in",
}


def _ascii_spelling(error: UnicodeEncodeError):
    text = error.object[error.start : error.end]
    return "".join(ASCII.get(c, "?") for c in text), error.end


codecs.register_error("lrbs-ascii", _ascii_spelling)


def prepare_process() -> None:
    """What every command sets up first (see :func:`command`): SIGTERM stops
    it as Ctrl-C does (:mod:`lrbs_tf.training.signals`: a run saves its state, exit status
    143), and stdout/stderr spell η, λ, ‖ … in ASCII when their encoding cannot encode them."""
    from lrbs_tf.training.signals import install_sigterm

    install_sigterm()
    for stream in (sys.stdout, sys.stderr):
        try:
            "η‖".encode(stream.encoding or "ascii")
        except (UnicodeEncodeError, LookupError):
            if hasattr(stream, "reconfigure"):
                stream.reconfigure(errors="lrbs-ascii")


def command(prog: str):
    """Decorate a command's ``main(argv)``: prepare the process (:func:`prepare_process`), and
    end a stop (Ctrl-C or SIGTERM) that no inner handler reported in one line with status 130
    or 143 instead of a traceback."""

    def wrap(main):
        @functools.wraps(main)
        def run(argv=None):
            prepare_process()
            if _loads_tensorflow_to_check(sys.argv[1:] if argv is None else argv):
                quiet_tensorflow()
            try:
                return main(argv)
            except KeyboardInterrupt as stop:
                from lrbs_tf.training.signals import exit_status

                fail(prog, "interrupted", status=exit_status(stop))

        return run

    return wrap


def _loads_tensorflow_to_check(argv) -> bool:
    """Whether checking the flags imports TensorFlow: a user's builder (its module is
    imported) or a tfds: dataset (described by tensorflow-datasets)."""
    from lrbs_tf.models.specs import MODELS

    flags = [a.split("=", 1) if a.startswith("--") and "=" in a else [a] for a in map(str, argv)]
    flat = [part for pair in flags for part in pair]
    values = dict(zip(flat, flat[1:]))
    model, dataset = values.get("--model"), values.get("--dataset", "")
    return (model is not None and model not in MODELS and ":" in model) or dataset.startswith(
        "tfds:"
    )


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line (no usage block) and exits with status 2,
    reads values like ``-0.1/100`` as values (so that they are refused with the reason, not
    taken for flags), and has ``--version``."""

    def __init__(self, *args, **kwargs):
        from lrbs_tf import __version__

        super().__init__(*args, **kwargs)
        self.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
        # argparse takes "-0.1/100" or "-1e-3" for an option; only plain "-1" or "-.5" count
        # as negative numbers to it
        self._negative_number_matcher = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?(/.*)?$")

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def seconds(text: str) -> float:
    """An argparse type: a positive, finite number of seconds."""
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, got {text!r}") from None
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"must be a positive, finite number, got {text!r}")
    return value


def fail(prog: str, message: str, status: int = 2):
    """Print ``prog: error: message`` (one line) to stderr and exit."""
    sys.stderr.write(f"{prog}: error: {' '.join(str(message).split())}\n")
    sys.exit(status)


# TensorFlow 2.21's start-up lines, printed by its C++ code before logging is set up (so
# TF_CPP_MIN_LOG_LEVEL does not reach them), and its retracing warning when it is about lrbs_tf's
# own per-object functions (each probe, evaluation and step logger traces its function once for
# the model it holds, so a command that runs many of them trips TensorFlow's count; retracing of
# any other function is still shown): exactly these are dropped from a command's stderr.
TF_NOISE = tuple(
    re.compile(p)
    for p in (
        r"^WARNING: All log messages before absl::InitializeLog\(\) is called are written "
        r"to STDERR$",
        r"^I\d{4} [\d:.]+ +\d+ (cudart_stub|cpu_feature_guard|port)\.cc:\d+\] ",
        r"^E\d{4} [\d:.]+ +\d+ cuda_platform\.cc:\d+\] failed call to cuInit",
        r"^To enable the following instructions: .* rebuild TensorFlow with the appropriate",
        r"^I\d{4} [\d:.]+ +\d+ .*oneDNN custom operations are on",
        r"^WARNING:tensorflow:\d+ out of the last \d+ calls to "
        r"(<bound method [\w.]+ of <lrbs_tf\.|<function _write_rows at ).* triggered tf\.function "
        r"retracing",
    )
)


def quiet_tensorflow() -> None:
    """Keep TensorFlow's start-up noise out of a command's output; call before TensorFlow is
    imported. Sets ``TF_CPP_MIN_LOG_LEVEL=2`` and filters the process's stderr (file
    descriptor 2, so C++ writes too) through a thread that drops the lines of
    :data:`TF_NOISE` and passes every other line on, as it comes. ``LRBS_TF_NOISE=1`` keeps
    everything."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if os.environ.get("LRBS_TF_NOISE") == "1" or getattr(quiet_tensorflow, "on", False):
        return
    quiet_tensorflow.on = True
    sys.stderr.flush()
    real = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)

    def forward():
        with os.fdopen(read_end, "rb") as pipe:
            for line in pipe:
                text = line.decode(errors="replace").rstrip("\n")
                if not any(p.search(text) for p in TF_NOISE):
                    os.write(real, line)

    thread = threading.Thread(target=forward, name="lrbs-stderr-filter", daemon=True)
    thread.start()

    def restore():  # at exit: everything written so far reaches the terminal
        sys.stderr.flush()
        os.dup2(real, 2)  # closes the pipe's last write end: the thread sees the end
        thread.join(timeout=5)

    atexit.register(restore)


# Run settings every figure script and sweep shares (their flags come from RunConfig).
SHARED = (
    "epochs",
    "seed",
    "model",
    "width",
    "dataset",
    "data_dir",
    "train_size",
    "validation_size",
    "augment",
    "logdir",
    "overwrite",
    "deterministic",
)
DEVICES = PLACEMENT  # declared once, in RunConfig


def add_run_flags(
    parser, epochs: int | None = None, logdir: str | None = None, names=SHARED + DEVICES
) -> None:
    """Flags for the run settings ``names`` (declared in :class:`RunConfig`; a script's own
    defaults for ``epochs`` and ``logdir``)."""
    from lrbs_tf.settings import add_flags
    from lrbs_tf.training.config import RunConfig

    defaults = {k: v for k, v in (("epochs", epochs), ("logdir", logdir)) if v is not None}
    add_flags(parser, RunConfig, names=names, defaults=defaults)


def add_distribute_flags(parser) -> None:
    """``--strategy``, ``--devices``, ``--cpu-devices``, ``--peer-timeout``."""
    add_run_flags(parser, names=DEVICES)


def split_cpu_now(prog: str, args) -> None:
    """``--cpu-devices N``: split the CPU before anything starts TensorFlow (keras-tuner does
    before the first run; :func:`lrbs_tf.training.run.train` splits it too, for the other
    scripts)."""
    if args.cpu_devices:
        from lrbs_tf.distribute.strategy import DistributeError, split_cpu

        try:
            split_cpu(args.cpu_devices)
        except DistributeError as e:
            fail(prog, e)


def refuse_multiworker_sweep(prog: str, args) -> None:
    """keras-tuner sweeps run their trials with ``--strategy mirrored`` at most."""
    if args.strategy == "multiworker":
        fail(
            prog,
            "--strategy multiworker is not supported by keras-tuner sweeps: spread the "
            "trials over machines with keras-tuner's distributed mode "
            "(tools/launch_tuner.py) and use --strategy mirrored for each machine's GPUs",
        )


def distribute_kwargs(args) -> dict:
    """RunConfig keyword arguments from the flags of :func:`add_distribute_flags`."""
    return {name: getattr(args, name) for name in DEVICES}


def run_kwargs(args, names=SHARED + DEVICES) -> dict:
    """RunConfig keyword arguments from the flags of :func:`add_run_flags`."""
    return {name: getattr(args, name) for name in names}


def setup_logging(verbose: bool = False) -> None:
    """Show the library's progress messages (the ``lrbs_tf`` logger) on stderr, one concise
    line each: INFO, or DEBUG with ``--verbose``."""
    import logging

    logger = logging.getLogger("lrbs_tf")
    if not any(getattr(h, "lrbs_cli", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler.lrbs_cli = True
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)


def add_verbose_flag(parser) -> None:
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="Keras' per-step progress bars and debug messages (default: one "
        "line per epoch and per run)",
    )


def say(message: str) -> None:
    """A progress line of a command: on stderr, through the ``lrbs_tf`` logger."""
    import logging

    logging.getLogger("lrbs_tf").info(message)


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
    from lrbs_tf.data.datasets import DataError
    from lrbs_tf.distribute.strategy import DistributeError
    from lrbs_tf.files import FileProblem
    from lrbs_tf.models.sources import ModelError
    from lrbs_tf.training.folder import DiskFullError, LogdirError, RunBusyError, disk_full
    from lrbs_tf.training.signals import RunInterrupted, exit_status

    try:
        yield
    except RunBusyError as e:
        fail(prog, e, status=EXIT_BUSY)
    except LogdirError as e:
        fail(prog, e, status=1)
    except (DataError, FileProblem, DistributeError, ModelError) as e:
        fail(prog, e)
    except KeyboardInterrupt as e:
        if isinstance(e, RunInterrupted):
            fail(prog, e, status=exit_status(e))
        fail(
            prog,
            "interrupted before any run was changed: run the same command to continue",
            status=exit_status(e),
        )
    except DiskFullError as e:
        fail(prog, e.strerror or e, status=EXIT_DISK_FULL)
    except OSError as e:
        if disk_full(e):
            fail(
                prog,
                f"the disk of {logdir} is full ({e.strerror or e}); free some space "
                "and run the same command again",
                status=EXIT_DISK_FULL,
            )
        fail(
            prog,
            f"{e.strerror or e} ({e.filename or logdir}): check that {logdir} is writable",
            status=1,
        )
    except Exception as e:
        if "tensorflow" not in sys.modules:
            raise
        _tensorflow_error(prog, e)
        raise


def _tensorflow_error(prog: str, e: Exception) -> None:
    """Interruptions and lost peers, which are raised once TensorFlow is running."""
    import tensorflow as tf

    from lrbs_tf.distribute.strategy import PEER_LOST_EXIT

    if isinstance(
        e,
        (
            tf.errors.UnavailableError,
            tf.errors.DeadlineExceededError,
            tf.errors.CancelledError,
            tf.errors.AbortedError,
        ),
    ):
        # what a collective raises when another worker died or never answered
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        telling = [
            ln
            for ln in lines
            if any(
                w in ln
                for w in (
                    "unhealthy",
                    "crashed",
                    "Error reported",
                    "Deadline",
                    "onnect",
                    "timed out",
                )
            )
        ]
        reason = (telling or lines or [type(e).__name__])[0]
        fail(
            prog,
            f"lost contact with another worker ({type(e).__name__}: {reason[:300]}); "
            "start all workers again to resume from the chief's last checkpoint",
            status=PEER_LOST_EXIT,
        )
