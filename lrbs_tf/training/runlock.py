"""One process per run folder: an exclusive ``flock`` on ``.lrbs-lock`` inside it, held until
:func:`release`; the kernel drops it when a process dies, so a killed run never blocks the
next one. Re-entrant within a process (a CLI takes the lock before TensorFlow loads, and
``train()`` takes it again)."""

from __future__ import annotations

import fcntl
import os
import socket
import time

from lrbs_tf.training.runio import RunFolderError

LOCK = ".lrbs-lock"
_held: dict = {}  # realpath of a run folder -> [file descriptor, count]


class RunBusyError(RunFolderError):
    """Another process holds the run folder."""


def acquire(run_dir: str) -> None:
    """Hold ``run_dir`` for this process (re-entrant), or raise :class:`RunBusyError`."""
    key = os.path.realpath(run_dir)
    if key in _held:
        _held[key][1] += 1
        return
    path = os.path.join(run_dir, LOCK)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 300).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise RunBusyError(
            f"{run_dir} is in use by {holder}; wait for it to end or choose another --name"
        ) from None
    os.ftruncate(fd, 0)
    os.write(
        fd,
        f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%H:%M:%S')}".encode(),
    )
    _held[key] = [fd, 1]


def release(run_dir: str) -> None:
    """Undo one :func:`claim`; the lock is dropped when the last one is undone."""
    key = os.path.realpath(run_dir)
    if key not in _held:
        return
    _held[key][1] -= 1
    if _held[key][1] <= 0:
        os.close(_held.pop(key)[0])


def holds(run_dir: str) -> bool:
    return os.path.realpath(run_dir) in _held
