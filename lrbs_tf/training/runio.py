"""Run folders: atomic JSON files, status, package versions.

A run folder holds ``config.json`` (every setting, seed, versions, data source), ``results.json``
(metrics, status) and TensorBoard event files under ``tb/``. JSON is written to a temporary file
in the same folder and renamed, so a killed process never leaves half a file.
"""

from __future__ import annotations

import errno
import hashlib
import importlib.metadata
import os
import platform
import stat
import sys

from lrbs_tf import files
from lrbs_tf.files import FileProblem, UnsafeFileError

STATUSES = ("running", "finished", "diverged", "interrupted", "failed")
_clean = files.jsonable


class RunFolderError(FileProblem):
    """A run folder that is missing, corrupt or half-written."""


def write_bytes(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary file, fsync, rename; never through a
    link, see :mod:`lrbs_tf.files`)."""
    files.write_bytes(path, data)


class DiskFullError(OSError):
    """The disk of a run folder is full; the run is marked ``failed`` and can be resumed once
    there is space."""


RESERVE = ".lrbs-reserve"
RESERVE_BYTES = 256 * 1024


def reserve(run_dir: str) -> None:
    """Hold some disk space in ``run_dir`` (released by :func:`free_reserve` when the disk is
    full, so that the failure can still be recorded in results.json). Never through a link."""
    path = os.path.join(run_dir, RESERVE)
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENXIO, errno.EISDIR):
            files.check_entry(path)
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnsafeFileError(f"{path} is {files.kind(info.st_mode)}, not lrbs_tf's reserve")
        if info.st_size >= RESERVE_BYTES:
            return
        os.write(fd, b"\0" * RESERVE_BYTES)
        os.fsync(fd)
    except OSError:
        os.close(fd)
        fd = -1
        files.remove(path)
        raise
    finally:
        if fd >= 0:
            os.close(fd)


def free_reserve(run_dir: str) -> None:
    try:
        files.remove(os.path.join(run_dir, RESERVE))
    except OSError:
        pass


def disk_full(error: BaseException) -> bool:
    """Is ``error`` (an OSError, or TensorFlow's or h5py's wrapping of one) a full disk?"""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(error)
    return "No space left on device" in text or "Disk quota exceeded" in text


def write_json(path: str, data) -> None:
    """Write ``data`` to ``path`` atomically (temporary file, fsync, rename)."""
    files.write_json(path, data)


def read_json(path: str):
    """The JSON file ``path`` (a regular file, not through a link); :class:`RunFolderError`
    if it is missing, of the wrong kind or corrupt."""
    try:
        return files.read_json(path)
    except FileProblem as e:
        raise RunFolderError(str(e)) from None


def versions() -> dict:
    """Versions of Python and of the packages a result depends on."""
    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for package in (
        "lrbs_tf",
        "tensorflow",
        "keras",
        "numpy",
        "tensorboard",
        "keras-tuner",
        "tensorflow-datasets",
    ):
        try:
            out[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            try:  # tensorflow-cpu and friends install under another distribution name
                out[package] = importlib.metadata.version(package + "-cpu")
            except importlib.metadata.PackageNotFoundError:
                out[package] = None
    return out


def write_csv(path: str, rows: list[dict], fields: list[str]) -> None:
    """Write ``rows`` (dicts) as CSV with the given columns, atomically."""
    files.write_csv(path, rows, fields)


# -- reading run folders: JSON of the right shape, digests ------------------------------------


def shaped(path: str, kind: str):
    """Read ``path`` and check it has the shape of a ``kind`` file (``config``, ``results``,
    ``state`` or ``marks``); raises RunDamagedError naming what is wrong."""
    data = read_json(path)
    problem = _shape_problem(data, kind)
    if problem:
        raise RunFolderError(f"{path} is not a valid {kind} file ({problem})")
    return data


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _shape_problem(data, kind: str) -> str | None:
    if not isinstance(data, dict):
        return f"a JSON {type(data).__name__} instead of an object"
    if kind == "config":
        if not isinstance(data.get("config"), dict):
            return "no 'config' object"
    elif kind == "results":
        if data.get("status") not in STATUSES:
            return f"status {data.get('status')!r} is not one of {', '.join(STATUSES)}"
        if not isinstance(data.get("epochs"), list) or not all(
            isinstance(e, dict) for e in data["epochs"]
        ):
            return "no list of epoch records"
    elif kind == "state":
        for key in ("epoch", "batch", "iterations", "weights_size"):
            if not _is_int(data.get(key)):
                return f"{key!r} is not a whole number"
        for key in ("weights_file", "weights_sha1"):
            if not isinstance(data.get(key), str) or "/" in data[key]:
                return f"{key!r} is not a file name or digest"
        if not isinstance(data.get("metrics"), list):
            return "no list of metric values"
        problem = _shape_problem(data.get("results"), "results")
        if problem:
            return f"its results: {problem}"
    elif kind == "marks":
        if not all(_is_int(v) for v in data.values()):
            return "marks are not whole numbers"
    return None


def sha1_of(path: str) -> str:
    """SHA-1 of the regular file ``path`` (not through a link)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    digest = hashlib.sha1()
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise UnsafeFileError(f"{path} is not a regular file")
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_run(run_dir: str, statuses=("finished", "diverged")) -> tuple[dict, dict]:
    """``(config.json, results.json)`` of a run folder for the tools, checked: a folder, both
    files of the right shape, a status among ``statuses``."""
    if not os.path.isdir(run_dir):
        raise RunFolderError(
            f"{run_dir} is not a run folder" if os.path.exists(run_dir) else f"{run_dir} is missing"
        )
    saved = shaped(os.path.join(run_dir, "config.json"), "config")
    results = shaped(os.path.join(run_dir, "results.json"), "results")
    if results["status"] not in statuses:
        raise RunFolderError(f"{run_dir} is not a finished run (status {results['status']!r})")
    return saved, results
