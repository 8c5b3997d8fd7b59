"""The folder of one scaling test: ours by our marker, one writer at a time, its branches'
records, resumable. Pure Python.

* A folder is ours only if it holds the marker ``.lrbs-scale`` (written when lrbs_tf creates
  it); one without it is refused, even with ``--overwrite``, unless it is empty. Inside it only
  lrbs_tf's own entries (:data:`OWN`) are ever deleted, and nothing is written or deleted
  through a link (:mod:`lrbs_tf.files`).
* ``scale.json`` records what the test measures (its identity: the start θ0, the settings, the
  plan) and θ0's digest. The same command finds the same identity and reuses every finished
  branch (``branches/NAME.json``, written last, after the branch's TensorBoard folder); a branch
  killed half-way is trained again from θ0, its TensorBoard folder cleared first. Other
  settings, or a θ0 that changed, are refused (``--overwrite`` starts afresh).
* The folder is locked (``flock``, :func:`lrbs_tf.training.folder.lock`) while a test runs.
"""

from __future__ import annotations

import os
import shutil
import time

from lrbs_tf import files
from lrbs_tf.files import FileProblem
from lrbs_tf.training.folder import lock, make_logdir, unlock, versions

MARKER, LOCK = ".lrbs-scale", ".lrbs-lock"
OWN = (
    "scale.json",
    "start.json",
    "probe.json",
    "scaling.json",
    "scaling.csv",
    "scaling.png",
    "branches",
    "tb",
    MARKER,
)


class ScaleFolderError(FileProblem):
    """A test folder that is not ours, holds another test, or is damaged; one line."""


class TestFolder:
    """A claimed (locked) test folder; :meth:`release` (or ``with``) unlocks it."""

    def __init__(self, path: str, saved: dict):
        self.path, self.saved = path, saved

    @classmethod
    def claim(cls, path: str, identity: dict, overwrite: bool = False) -> TestFolder:
        """Create or reopen ``path`` for the test ``identity`` (see the module docstring)."""
        make_logdir(os.path.dirname(os.path.abspath(path)))
        files.make_folder(path)
        _check_ours(path)
        lock(path)
        try:
            saved = _reopen(path, files.jsonable(identity), overwrite)
            if not files.check_entry(os.path.join(path, MARKER)):
                files.write_json(os.path.join(path, MARKER), {"created": time.strftime("%FT%T")})
            files.make_folder(os.path.join(path, "branches"))
            files.make_folder(os.path.join(path, "tb"))
            return cls(path, saved)
        except BaseException:
            unlock(path)
            raise

    @staticmethod
    def check(path: str, identity: dict, overwrite: bool = False) -> None:
        """Would :meth:`claim` refuse ``path``? Raises what it would raise, writing nothing:
        so that a command refuses before it loads anything."""
        if not os.path.lexists(path):
            return
        files.check_entry(path, folder=True)
        _check_ours(path)
        scale = os.path.join(path, "scale.json")
        saved = files.read_json(scale) if files.check_entry(scale) else None
        if not overwrite and isinstance(saved, dict):
            if saved.get("identity") != files.jsonable(identity):
                raise ScaleFolderError(_OTHER.format(path=path))

    def release(self) -> None:
        unlock(self.path)

    def __enter__(self) -> TestFolder:
        return self

    def __exit__(self, *exc) -> bool:
        self.release()
        return False

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    def check_theta0(self, digest: str) -> None:
        """Record θ0's digest, or refuse a θ0 other than the one the test started from."""
        before = self.saved.get("theta0_sha1")
        if before is not None and before != digest:
            raise ScaleFolderError(
                f"{self.path}: the starting point θ0 changed since the test started (weights "
                f"{before[:12]}… then, {digest[:12]}… now): restore it, or pass --overwrite"
            )
        self.saved["theta0_sha1"] = digest
        files.write_json(self.file("scale.json"), self.saved)

    def record(self, name: str) -> dict | None:
        """A finished branch's record, or None (its half-written TensorBoard folder removed)."""
        path = self.file(os.path.join("branches", f"{name}.json"))
        if files.check_entry(path):
            return files.read_json(path)
        board = self.tb(name)
        if files.check_entry(board, folder=True):
            shutil.rmtree(board)  # ours (inside our marked folder); never follows a link
        return None

    def save(self, name: str, record: dict) -> None:
        files.write_json(self.file(os.path.join("branches", f"{name}.json")), record)

    def tb(self, name: str) -> str:
        return self.file(os.path.join("tb", name))

    def cached(self, name: str):
        """A JSON file of the test (``probe.json``…) if written, else None."""
        path = self.file(name)
        return files.read_json(path) if files.check_entry(path) else None


_OTHER = (
    "{path} holds a scaling test with other settings or another θ0; pass --overwrite to replace "
    "it or --name to choose another folder"
)


def _check_ours(path: str) -> None:
    entries = [e for e in os.listdir(path) if e != LOCK]
    if entries and not os.path.isfile(os.path.join(path, MARKER)):
        raise ScaleFolderError(
            f"{path} exists and is not a scaling-test folder of lrbs_tf (no {MARKER} marker); "
            "lrbs_tf never deletes what it did not write: choose another --name or --logdir"
        )
    files.check_entry(os.path.join(path, MARKER))  # a link in its place is refused


def _reopen(path: str, identity: dict, overwrite: bool) -> dict:
    scale = os.path.join(path, "scale.json")
    saved = files.read_json(scale) if files.check_entry(scale) else None
    if saved is not None and not isinstance(saved, dict):
        raise ScaleFolderError(f"{scale} is damaged (not a JSON object); --overwrite starts afresh")
    if saved is not None and saved.get("identity") != identity and not overwrite:
        raise ScaleFolderError(_OTHER.format(path=path))
    if saved is None or overwrite:
        for entry in OWN:
            _remove(os.path.join(path, entry))
        saved = {"identity": identity, "versions": versions(), "created": time.strftime("%FT%T")}
        files.write_json(scale, saved)
    return saved


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        files.remove(path)


def tests_of(run_dir: str, places=()) -> list[tuple[str, dict, dict]]:
    """The finished scaling tests that started from the run folder ``run_dir`` (at one of its
    epochs, or as their warm-up): ``(test folder, its scaling.json, its start)``, found in
    ``places`` (test folders, or folders holding them) and beside the run
    (``RUN/../scaling/*``, ``RUN/../*``). Unreadable or foreign folders are skipped."""
    run = os.path.realpath(run_dir)
    parent = os.path.dirname(run)
    found, seen = [], set()
    for place in [*places, os.path.join(parent, "scaling"), parent]:
        candidates = [place] + (
            [os.path.join(place, e) for e in sorted(os.listdir(place))]
            if os.path.isdir(place)
            else []
        )
        for folder in candidates:
            real = os.path.realpath(folder)
            if real in seen or not os.path.isfile(os.path.join(folder, MARKER)):
                continue
            seen.add(real)
            try:
                start = files.read_json(os.path.join(folder, "scale.json"))["identity"]["start"]
                if start["kind"] in ("run", "warmup") and os.path.realpath(start["spec"]) == run:
                    report = files.read_json(os.path.join(folder, "scaling.json"))
                    found.append((folder, report, start))
            except (FileProblem, KeyError, TypeError):
                continue
    return found
