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


def _atomic_write(path: str, text: str, suffix: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, fsync it, and rename it over."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=directory)
    try:
        with os.fdopen(fd, "w", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json(path: str, data) -> None:
    """Write ``data`` to ``path`` atomically (temporary file, fsync, rename)."""
    _atomic_write(path, json.dumps(_clean(data), indent=2) + "\n", ".json")


class RunFolderError(RuntimeError):
    """A run folder that is missing, corrupt or half-written."""


def read_json(path: str) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise RunFolderError(f"{path} is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
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
