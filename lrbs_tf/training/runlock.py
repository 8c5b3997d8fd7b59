"""One writer per run folder: a ``flock`` on ``.lrbs-lock`` inside it, held until
:func:`release`; the kernel drops it when a process dies, so a killed run never blocks the
next one. Training holds it exclusively; tools that only read a run and add their own file
(``probe.py``) hold it shared, so they run beside each other but never while the run trains or
is rebuilt. Re-entrant within a process (a CLI takes the lock before TensorFlow loads, and
``train()`` takes it again). The lock file is opened without following a link and must be a
regular file: a link or FIFO in its place is refused, never truncated."""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import stat
import time

from lrbs_tf import files
from lrbs_tf.training.runio import RunFolderError

LOCK = ".lrbs-lock"
_held: dict = {}  # realpath of a run folder -> [file descriptor, count, shared]


class RunBusyError(RunFolderError):
    """Another process holds the run folder."""


def _open(path: str) -> int:
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENXIO, errno.EISDIR):
            files.check_entry(path)  # raises, naming what is there
        raise
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise files.UnsafeFileError(f"{path} is {files.kind(mode)}, not lrbs_tf's lock file")
    return fd


def acquire(run_dir: str, shared: bool = False) -> None:
    """Hold ``run_dir`` for this process (re-entrant), or raise :class:`RunBusyError`.
    ``shared``: for a reader, which may run beside other readers but not beside training."""
    key = os.path.realpath(run_dir)
    if key in _held:
        _held[key][1] += 1
        return
    path = os.path.join(run_dir, LOCK)
    fd = _open(path)
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 300).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise RunBusyError(
            f"{run_dir} is in use by {holder}; wait for it to end or choose another --name"
        ) from None
    if not shared:  # a reader leaves the writer's note alone
        os.ftruncate(fd, 0)
        note = f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%H:%M:%S')}"
        os.write(fd, note.encode())
    _held[key] = [fd, 1, shared]


def release(run_dir: str) -> None:
    """Undo one :func:`acquire`; the lock is dropped when the last one is undone."""
    key = os.path.realpath(run_dir)
    if key not in _held:
        return
    _held[key][1] -= 1
    if _held[key][1] <= 0:
        os.close(_held.pop(key)[0])


def holds(run_dir: str) -> bool:
    return os.path.realpath(run_dir) in _held
