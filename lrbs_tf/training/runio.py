"""Run folders: atomic JSON files, status, package versions.

A run folder holds ``config.json`` (every setting, seed, versions, data source), ``results.json``
(metrics, status) and TensorBoard event files under ``tb/``. JSON is written to a temporary file
in the same folder and renamed, so a killed process never leaves half a file.
"""
from __future__ import annotations

import importlib.metadata
import json
import math
import os
import platform
import sys
import tempfile

STATUSES = ("running", "finished", "diverged", "interrupted", "failed")


def _clean(obj):
    """JSON-safe copy: numpy scalars to Python, non-finite floats to strings 'nan'/'inf'."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 1) == 0:
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    return obj


_UMASK = os.umask(0)
os.umask(_UMASK)


def _atomic_write(path: str, text: str | bytes, suffix: str) -> None:
    """Write ``text`` (or bytes) to a temporary file beside ``path``, fsync it, and rename it
    over; on any failure (a full disk included) the temporary file is removed."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=directory)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # as open() would create it (mkstemp makes it 0600)
        binary = isinstance(text, bytes)
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"newline": ""})) as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_bytes(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary file, fsync, rename)."""
    _atomic_write(path, data, os.path.splitext(path)[1] or ".bin")


class DiskFullError(OSError):
    """The disk of a run folder is full; the run is marked ``failed`` and can be resumed once
    there is space."""


RESERVE = ".lrbs-reserve"
RESERVE_BYTES = 256 * 1024


def reserve(run_dir: str) -> None:
    """Hold some disk space in ``run_dir`` (released by :func:`free_reserve` when the disk is
    full, so that the failure can still be recorded in results.json)."""
    path = os.path.join(run_dir, RESERVE)
    if os.path.exists(path) and os.path.getsize(path) >= RESERVE_BYTES:
        return
    try:
        with open(path, "wb") as f:
            f.write(b"\0" * RESERVE_BYTES)
            f.flush()
            os.fsync(f.fileno())
    except OSError:
        if os.path.exists(path):
            os.remove(path)
        raise


def free_reserve(run_dir: str) -> None:
    try:
        os.remove(os.path.join(run_dir, RESERVE))
    except OSError:
        pass


def disk_full(error: BaseException) -> bool:
    """Is ``error`` (an OSError, or TensorFlow's or h5py's wrapping of one) a full disk?"""
    import errno

    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(error)
    return "No space left on device" in text or "Disk quota exceeded" in text


def write_json(path: str, data) -> None:
    """Write ``data`` to ``path`` atomically (temporary file, fsync, rename)."""
    _atomic_write(path, json.dumps(_clean(data), indent=2) + "\n", ".json")


class RunFolderError(RuntimeError):
    """A run folder that is missing, corrupt or half-written."""


def read_json(path: str):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise RunFolderError(f"{path} is missing") from None
    except (IsADirectoryError, NotADirectoryError):
        raise RunFolderError(f"{path} is not a file") from None
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError) as e:
        raise RunFolderError(f"{path} is corrupt ({e})") from None


def versions() -> dict:
    """Versions of Python and of the packages a result depends on."""
    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for package in ("lrbs_tf", "tensorflow", "keras", "numpy", "tensorboard",
                    "keras-tuner", "tensorflow-datasets"):
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
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(_clean(rows))
    _atomic_write(path, buffer.getvalue(), ".csv")
