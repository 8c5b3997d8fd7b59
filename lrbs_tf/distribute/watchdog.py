"""Keeping multi-worker runs from hanging: a watchdog process and the heartbeats it waits for.

Training, evaluation and probes report progress through :func:`heartbeat` (the training loop
wraps the probes' work in it; the probes themselves know nothing of workers).
"""

from __future__ import annotations

import os
import sys
import time

_watchdog = None  # this process's Watchdog, once started


class Watchdog:
    """Ends this process when nothing has progressed for ``timeout`` seconds.

    A multi-worker collective waits for every peer; if one died or never started, the others
    would wait for ever (TensorFlow waits up to an hour for peers to register, and catches
    SIGTERM). The wait happens inside TensorFlow's C++ code without releasing Python's GIL, so
    the watchdog is a small separate process: training, evaluation and probes call
    :func:`heartbeat`, which writes to its pipe (at most once a second); when the beats stop,
    it prints what this process was waiting for and kills it with SIGKILL (exit status 137).
    :func:`pause_watchdog` stops the clock outside collective work (between runs).
    """

    CODE = r"""
import os, select, signal, sys, time
parent, timeout = int(sys.argv[1]), float(sys.argv[2])
what, last, paused = sys.argv[3], time.monotonic(), False
while True:
    ready, _, _ = select.select([0], [], [], 1.0)
    if ready:
        data = os.read(0, 4096)
        if not data:
            sys.exit(0)  # the process ended normally
        what, last = data.decode(errors="replace").strip().splitlines()[-1], time.monotonic()
        paused = what == "PAUSE"
    elif not paused and time.monotonic() - last > timeout:
        sys.stderr.write(
            f"lrbs_tf: error: no progress for {time.monotonic() - last:.0f} s while {what}: "
            "another worker is gone, stuck or never started; stopping this worker (the "
            "chief's last checkpoint is kept: start all workers again to resume)\n")
        sys.stderr.flush()
        os.kill(parent, signal.SIGKILL)
        sys.exit(1)
"""

    def __init__(self, timeout: float, what: str):
        import subprocess

        self.timeout = float(timeout)
        self.what = what
        self.sent = 0.0
        self.process = subprocess.Popen(
            [sys.executable, "-c", self.CODE, str(os.getpid()), str(self.timeout), what],
            stdin=subprocess.PIPE,
            close_fds=True,
        )

    def beat(self, what: str | None = None) -> None:
        now = time.monotonic()
        what = what or ("working" if self.what == "PAUSE" else self.what)
        if what == self.what and now - self.sent < 1.0:
            return
        self.what = what
        self.sent = now
        try:
            self.process.stdin.write(self.what.encode() + b"\n")
            self.process.stdin.flush()
        except (BrokenPipeError, ValueError):
            pass


def start_watchdog(timeout: float, what: str) -> Watchdog:
    """Start this process's :class:`Watchdog` (once; it lives until the process ends)."""
    global _watchdog
    if _watchdog is None:
        _watchdog = Watchdog(timeout, what)
    else:
        _watchdog.beat(what)
    return _watchdog


def pause_watchdog() -> None:
    """No collective work until the next :func:`heartbeat`: stop the watchdog's clock."""
    if _watchdog is not None:
        _watchdog.beat("PAUSE")


def heartbeat(what: str | None = None) -> None:
    """Tell the watchdog (if any) that this process is making progress."""
    if _watchdog is not None:
        _watchdog.beat(what)
