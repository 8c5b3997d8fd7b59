"""Progress goes to stderr, results to stdout: what a stage does and about how long it takes, on
the ``lrbs_tf`` logger (:func:`stage`, :func:`duration`), and Keras' progress bars — which Keras
writes to stdout, redrawn with ``\\r`` and coloured with ANSI codes — moved to stderr
(:func:`keras_bars_to_stderr`): as Keras draws them on a terminal, one plain line per finished
bar in a file or pipe.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import sys
import time

log = logging.getLogger("lrbs_tf")
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def duration(seconds: float) -> str:
    """``42 s``, ``3.5 min``, ``1.2 h``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


@contextlib.contextmanager
def stage(what: str, estimate: float | None = None, logger: logging.Logger | None = None):
    """Log ``what`` (with ``about <estimate>`` when one is given) before the stage, and how long
    it took after it when that was over 10 s."""
    logger = logger or log
    if estimate:
        logger.info("%s (about %s)", what, duration(estimate))
    else:
        logger.info(what)
    tick = time.time()
    yield
    took = time.time() - tick
    if took > 10:
        logger.info("%s: done in %s", what, duration(took))


class _Bars(io.TextIOBase):
    """A text stream for Keras' progress bars: passed on as written to a terminal; elsewhere
    only each finished line, as its last redraw, without ANSI codes."""

    def __init__(self, target):
        super().__init__()
        self.target, self.pending = target, ""
        self.terminal = bool(getattr(target, "isatty", lambda: False)())

    def isatty(self) -> bool:
        return self.terminal

    def writable(self) -> bool:
        return True

    @property
    def encoding(self):
        return getattr(self.target, "encoding", "utf-8")

    def write(self, text: str) -> int:
        if self.terminal:
            return self.target.write(text)
        self.pending += text
        *lines, self.pending = self.pending.split("\n")
        for line in lines:
            last = ANSI.sub("", line.split("\r")[-1]).replace("\b", "").rstrip()
            if last:
                self.target.write(last + "\n")
        return len(text)

    def flush(self) -> None:
        self.target.flush()


@contextlib.contextmanager
def keras_bars_to_stderr():
    """Within this block what Keras prints to stdout (its progress bars) goes to stderr."""
    with contextlib.redirect_stdout(_Bars(sys.stderr)):
        yield
