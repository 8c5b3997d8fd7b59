"""Run folders: atomic JSON files, status, package versions.

A run folder holds ``config.json`` (every setting, seed, versions, data source), ``results.json``
(metrics, status) and TensorBoard event files under ``tb/``. JSON is written to a temporary file
in the same folder and renamed, so a killed process never leaves half a file.
"""

from __future__ import annotations

import hashlib
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
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(_clean(rows))
    _atomic_write(path, buffer.getvalue(), ".csv")


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
    digest = hashlib.sha1()
    with open(path, "rb") as f:
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
