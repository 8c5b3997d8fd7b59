"""Ctrl-C and SIGTERM as clean stops: both raise :class:`Stop` (a ``KeyboardInterrupt``) in the
main thread, which a run answers by saving its state; inside :func:`deferred` sections (an
epoch's records and checkpoint, the final writes, a TensorBoard flush) a signal waits until the
section is done, so a stop never lands between two writes that belong together.

SIGKILL cannot be caught: its protection is that every file is written atomically and the
position is checkpointed (:mod:`lrbs_tf.training.checkpoint`). A signal the process inherited
as ignored (a background job of a non-interactive shell ignores SIGINT, by POSIX convention)
stays ignored. Outside the main thread (a run started from a worker thread) nothing is
installed, and Python's own handling applies.
"""

from __future__ import annotations

import signal
import threading

STOPPING = (signal.SIGINT, signal.SIGTERM)
_received: list[int] = []  # stops received while lrbs_tf's handler was installed
_depth = [0]  # graceful sections entered and not left


class Stop(KeyboardInterrupt):
    """The process was asked to stop by ``signum`` (SIGINT or SIGTERM)."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class RunInterrupted(Stop):
    """A run was stopped (Ctrl-C or SIGTERM) and its state saved; the message says where. A
    ``KeyboardInterrupt``, so that a sweep (keras-tuner) stops too instead of counting a
    failed trial."""

    def __init__(self, message: str, signum: int = signal.SIGINT):
        super().__init__(signum)
        self.args = (message,)

    def __str__(self) -> str:
        return str(self.args[0])


def signum_of(error: BaseException) -> int:
    """The signal behind a stop (SIGINT for a plain ``KeyboardInterrupt``)."""
    return getattr(error, "signum", signal.SIGINT)


def exit_status(stop) -> int:
    """128 + the signal number of ``stop`` (an exception or a signal number): 130 for Ctrl-C,
    143 for SIGTERM."""
    return 128 + int(stop if isinstance(stop, int) else signum_of(stop))


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _raise(signum, frame):
    _received.append(signum)
    raise Stop(signum)


def received() -> int | None:
    """The last stop received by lrbs_tf's handler (and not yet forgotten), else None. A
    ``KeyboardInterrupt`` raised inside TensorFlow or Keras can be swallowed there, or turned
    into another error; this remembers that the user asked to stop all the same."""
    return _received[-1] if _received else None


def raise_if_received() -> None:
    """Raise :class:`Stop` for a stop that was received but lost on its way (see
    :func:`received`); call it at safe points."""
    if _received:
        raise Stop(_received[-1])


def forget() -> None:
    _received.clear()


def install_sigterm() -> None:
    """For the whole process (a command): SIGTERM raises :class:`Stop`, as Ctrl-C does,
    unless it is ignored."""
    if _main_thread() and signal.getsignal(signal.SIGTERM) is not signal.SIG_IGN:
        signal.signal(signal.SIGTERM, _raise)


class graceful:
    """While active, SIGINT and SIGTERM raise :class:`Stop` (SIGTERM then stops like Ctrl-C
    instead of ending the process at once, so a run saves its state on either) and are
    remembered (:func:`received`). Re-entrant; restores the handlers, and forgets what it
    received when the outermost one ends."""

    def __enter__(self):
        self.saved = {}
        if _depth[0] == 0:
            forget()
        _depth[0] += 1
        if _main_thread():
            for signum in STOPPING:
                current = signal.getsignal(signum)
                if current is not signal.SIG_IGN and current is not _raise:
                    self.saved[signum] = signal.signal(signum, _raise)
        return self

    def __exit__(self, *exc):
        for signum, handler in self.saved.items():
            signal.signal(signum, handler)
        _depth[0] -= 1
        if _depth[0] == 0:
            forget()
        return False


class deferred:
    """A section that a stop does not interrupt: SIGINT/SIGTERM arriving inside are remembered
    and raised as :class:`Stop` when the section ends (unless it ends with an exception of its
    own). ``swallow=True`` (the clean-up after a stop) only remembers them: a second Ctrl-C
    while the state is being saved does not cut the save short."""

    def __init__(self, swallow: bool = False):
        self.swallow = swallow
        self.pending: list[int] = []
        self.saved: dict = {}

    def _remember(self, signum, frame):
        self.pending.append(signum)
        _received.append(signum)

    def __enter__(self):
        if _main_thread():
            for signum in STOPPING:
                current = signal.getsignal(signum)
                if current is not signal.SIG_IGN:
                    self.saved[signum] = signal.signal(signum, self._remember)
        return self

    def __exit__(self, exc_type, exc, tb):
        for signum, handler in self.saved.items():
            signal.signal(signum, handler)
        if self.pending and exc_type is None and not self.swallow:
            raise Stop(self.pending[0])
        return False
