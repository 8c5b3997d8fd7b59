"""Run folders: what a folder holds, who may write it, and what may be deleted. Pure Python.

Rules (the reasons are in the README's "Nothing lost"):

* A run name is one plain path component (letters, digits and ``._=+-``, not starting with a
  dot), so a run folder is always a direct child of ``--logdir``.
* lrbs_tf deletes only what it can prove it wrote: a folder is ours only if it holds the marker
  file ``.lrbs-run`` (written when lrbs_tf creates a run folder). A folder without it is never
  ours, even with ``--overwrite`` and even if it holds a ``config.json`` of lrbs_tf's shape (a
  copy proves nothing); ``--adopt`` marks a run folder of an older lrbs_tf as ours, on the
  user's word. Inside a folder of ours only lrbs_tf's own entries (:data:`OWN_FILES`,
  :data:`OWN_FOLDERS`) are ever deleted; anything else in it is left alone.
* A damaged run folder — JSON of the wrong shape, a finished run without its config or model,
  a model that does not match its recorded digest, recorded epochs without a checkpoint to
  resume them, a checkpoint whose weights do not match ``state.json``, or a symbolic link,
  FIFO, socket or device where lrbs_tf expects its own file or folder — is refused with a
  message naming what is damaged; nothing is deleted without ``--overwrite``, and nothing is
  ever deleted or written through a link (see :mod:`lrbs_tf.files`).
* One process per run folder: :func:`claim` holds an exclusive ``flock`` on ``.lrbs-lock``
  inside the folder until :func:`release` (the kernel drops it when a process dies, so a
  killed run never blocks the next one). A second process is refused with
  :class:`~lrbs_tf.training.runlock.RunBusyError`.

Everything is checked before anything is written.
"""

from __future__ import annotations

import dataclasses
import errno
import math
import os
import re
import shutil
import time

from lrbs_tf import files
from lrbs_tf.training import runio, runlock
from lrbs_tf.training.runio import RESERVE, RunFolderError, read_json, sha1_of
from lrbs_tf.training.runlock import LOCK

MARKER = ".lrbs-run"
# What lrbs_tf writes in a run folder: the only entries it ever deletes there.
OWN_FILES = (
    "config.json",
    "results.json",
    "model.keras",
    "probe.json",
    "spectral_density.png",
    MARKER,
    LOCK,
    RESERVE,
)
OWN_FOLDERS = ("ckpt", "tb")
NAME = re.compile(r"[A-Za-z0-9_=+-][A-Za-z0-9._=+-]*")


class RunExistsError(RunFolderError):
    """The run folder holds another run, or something that is not a run."""


class LogdirError(RunFolderError):
    """``--logdir`` cannot be a folder we can write (exit status 1, like an unwritable one)."""


class RunDamagedError(RunFolderError):
    """The run folder is damaged; nothing was changed."""


def check_name(name: str) -> str:
    """A run name must be one plain path component; returns it or raises ValueError."""
    if not isinstance(name, str) or not NAME.fullmatch(name) or len(name) > 200:
        raise ValueError(
            f"--name must be one folder name of letters, digits and ._=+- "
            f"(not starting with a dot), got {name!r}"
        )
    return name


# -- what a folder holds -------------------------------------------------------------------


@dataclasses.dataclass
class Inspection:
    """What :func:`inspect` found: ``mode`` is ``new`` (nothing, or nothing of value: start
    afresh), ``resume`` (a checkpoint of the same settings) or ``finished``; ``leftovers``
    are lrbs_tf's own entries of an unstarted run (or, with ``--overwrite``, of any run) to
    remove before starting."""

    mode: str
    ours: bool = False
    leftovers: list = dataclasses.field(default_factory=list)
    results: dict | None = None
    adopt: bool = False  # a run folder of an older lrbs_tf taken over with --adopt


def _entries(run_dir: str) -> list[str]:
    return [
        e for e in os.listdir(run_dir) if e not in (LOCK, RESERVE) and not e.startswith(".tmp-")
    ]


def _own(entry: str) -> bool:
    return entry in OWN_FILES or entry in OWN_FOLDERS or entry.startswith(".tmp-")


def check_kinds(run_dir: str) -> None:
    """Refuse a link, FIFO, socket or device where lrbs_tf expects its own file or folder
    (:class:`~lrbs_tf.files.UnsafeFileError` naming the path); ``ckpt/`` and ``tb/`` are
    walked (without following links)."""
    for entry in os.listdir(run_dir):
        path = os.path.join(run_dir, entry)
        if entry in OWN_FOLDERS:
            files.check_entry(path, folder=True)
            for root, folders, names in os.walk(path):
                for name in folders:
                    files.check_entry(os.path.join(root, name), folder=True)
                for name in names:
                    files.check_entry(os.path.join(root, name))
        elif entry in OWN_FILES or entry.startswith(".tmp-"):
            files.check_entry(path)


def ours(run_dir: str) -> bool:
    """Does this folder hold lrbs_tf's marker (a real file, not a link)?"""
    try:
        return files.check_entry(os.path.join(run_dir, MARKER))
    except files.UnsafeFileError:
        return False


def older_run(run_dir: str) -> bool:
    """Does the folder look like a run folder of an lrbs_tf before 0.2 (no marker; a
    config.json of lrbs_tf's shape)? Only ``--adopt`` makes such a folder ours."""
    try:
        saved = read_json(os.path.join(run_dir, "config.json"))
    except RunFolderError:
        return False
    return (
        isinstance(saved, dict)
        and isinstance(saved.get("config"), dict)
        and isinstance(saved.get("versions"), dict)
        and "lrbs_tf" in saved["versions"]
    )


def inspect(config, overwrite: bool | None = None) -> Inspection:
    """Look at ``config.run_dir`` without changing anything (see the module docstring)."""
    run_dir = config.run_dir
    overwrite = config.overwrite if overwrite is None else overwrite
    if not os.path.lexists(run_dir):
        return Inspection("new")
    if not os.path.isdir(run_dir) or os.path.islink(run_dir):
        raise RunExistsError(
            f"{run_dir} exists and is not a folder; choose another --name or --logdir"
        )
    entries = _entries(run_dir)
    if not entries:
        return Inspection("new", ours=True)
    adopting = not ours(run_dir)
    if adopting and not (getattr(config, "adopt", False) and older_run(run_dir)):
        raise RunExistsError(_not_ours(run_dir))
    own = [e for e in entries if _own(e)]
    if overwrite:
        return Inspection("new", ours=True, leftovers=own, adopt=adopting)
    try:
        check_kinds(run_dir)
        found = _inspect_ours(config, run_dir, own)
    except (RunExistsError, RunDamagedError):
        raise
    except files.UnsafeFileError as e:
        raise _damaged(run_dir, str(e)) from None
    except RunFolderError as e:  # a file of ours that does not parse
        raise RunDamagedError(f"{e}{OVERWRITE_NOTE}") from None
    found.adopt = adopting
    return found


def _not_ours(run_dir: str) -> str:
    if older_run(run_dir):
        return (
            f"{run_dir} has no {MARKER} marker, although its config.json has the shape of an "
            "lrbs_tf run (a run of lrbs_tf before 0.2, or a copy): lrbs_tf never deletes what "
            "it cannot prove it wrote. If it is a run of an older lrbs_tf, --adopt takes it "
            "over (only lrbs_tf's own files in it are ever replaced); otherwise choose another "
            "--name or --logdir"
        )
    return (
        f"{run_dir} exists and is not an lrbs_tf run folder (no {MARKER} marker); "
        "lrbs_tf never deletes what it did not write: choose another --name or --logdir, "
        "or move the folder away"
    )


OVERWRITE_NOTE = (
    "; nothing was changed. --overwrite would delete this run folder and train the run from scratch"
)


def _damaged(run_dir: str, what: str) -> RunDamagedError:
    return RunDamagedError(f"{run_dir} is damaged: {what}{OVERWRITE_NOTE}")


def _inspect_ours(config, run_dir, entries) -> Inspection:
    has = set(entries)
    valuable = sorted(has & {"results.json", "model.keras", "tb", "ckpt", "probe.json"})
    marks_path = os.path.join(run_dir, "tb", "written.json")
    if os.path.exists(marks_path):
        runio.shaped(marks_path, "marks")
    if "config.json" not in has:
        if valuable:
            raise _damaged(
                run_dir, f"config.json is missing (the folder holds {', '.join(valuable)})"
            )
        return Inspection("new", ours=True, leftovers=entries)
    saved = runio.shaped(os.path.join(run_dir, "config.json"), "config")
    if not same_settings(saved["config"], config):
        raise RunExistsError(
            f"{run_dir} holds a run with other settings; pass --overwrite to "
            "replace it or --name to choose another folder"
        )
    state_path = os.path.join(run_dir, "ckpt", "state.json")
    state = _checked_state(run_dir, state_path) if os.path.exists(state_path) else None
    if "results.json" not in has:
        if state is not None or "model.keras" in has or "tb" in has:
            raise _damaged(
                run_dir,
                "results.json is missing (the folder holds "
                f"{', '.join(v for v in valuable if v != 'results.json')})",
            )
        return Inspection("new", ours=True, leftovers=entries)
    results = runio.shaped(os.path.join(run_dir, "results.json"), "results")
    if results["status"] in ("finished", "diverged"):
        _check_model(run_dir, results)
        return Inspection("finished", ours=True, results=results)
    if state is not None:
        return Inspection("resume", ours=True, results=results)
    if results["epochs"] or "model.keras" in has:
        raise _damaged(
            run_dir,
            f"results.json says {results['status']!r} with "
            f"{len(results['epochs'])} epoch(s) recorded, but there is no "
            "checkpoint to resume from",
        )
    return Inspection("new", ours=True, leftovers=entries)  # stopped before its first epoch


def _checked_state(run_dir: str, path: str) -> dict:
    state = runio.shaped(path, "state")
    weights = os.path.join(run_dir, "ckpt", state["weights_file"])
    if (
        not os.path.isfile(weights)
        or os.path.getsize(weights) != state["weights_size"]
        or sha1_of(weights) != state["weights_sha1"]
    ):
        raise _damaged(
            run_dir,
            f"the checkpoint's weights file {state['weights_file']} does not match ckpt/state.json",
        )
    return state


def _check_model(run_dir: str, results: dict) -> None:
    path = os.path.join(run_dir, "model.keras")
    if not os.path.isfile(path):
        raise _damaged(run_dir, f"the run is {results['status']} but model.keras is missing")
    want = results.get("model_sha1")
    if want is not None and (
        os.path.getsize(path) != results.get("model_bytes") or sha1_of(path) != want
    ):
        raise _damaged(
            run_dir,
            "model.keras does not match the digest recorded in "
            "results.json (truncated or replaced)",
        )


def same_settings(saved: dict, config) -> bool:
    """Does a saved ``config.json`` describe ``config``? Settings added to RunConfig (or to its
    probe settings) after the run was saved count as equal when they hold their default value,
    so a newer lrbs_tf reuses the runs of an older one."""
    from lrbs_tf.probes.settings import ProbeSettings
    from lrbs_tf.training.config import RunConfig  # config imports this module

    _clean = files.jsonable
    skip = {
        "overwrite",
        "resume",
        "adopt",
        "logdir",
        "strategy",
        "devices",
        "cpu_devices",
        "peer_timeout",
    }
    now = {k: v for k, v in _clean(config.to_dict()).items() if k not in skip}
    defaults = _clean(dataclasses.asdict(RunConfig(lr=1.0, batch_size=1, probe=ProbeSettings())))
    return _same(saved, now, defaults)


def _same(saved: dict, now: dict, defaults: dict) -> bool:
    for key, value in now.items():
        if key not in saved:
            if key not in defaults or defaults[key] != value:
                return False
        elif isinstance(value, dict) and isinstance(saved[key], dict):
            if not _same(saved[key], value, defaults.get(key) or {}):
                return False
        elif saved[key] != value and not _both_nan(saved[key], value):
            return False
    return True


def _both_nan(a, b) -> bool:
    return isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)


# -- taking a folder -----------------------------------------------------------------------


def claim(config) -> Inspection:
    """Create or inspect the run folder, lock it for this process, and clear lrbs_tf's own
    leftovers of an unstarted run (or of any run, with ``--overwrite``). Re-entrant within a
    process."""
    run_dir = config.run_dir
    make_logdir(config.logdir)
    found = inspect(config)
    if found.mode == "new" and not found.ours:
        try:
            os.mkdir(run_dir)
        except FileExistsError:  # another process made it just now
            found = inspect(config)
    if config.overwrite:  # a link or FIFO in place of the lock or the reserve: remove it
        for name in (LOCK, RESERVE):
            path = os.path.join(run_dir, name)
            if os.path.islink(path) or (os.path.lexists(path) and not os.path.isfile(path)):
                files.remove(path)
    runlock.acquire(run_dir)
    try:
        found = inspect(config)  # again, now that no one else can change it
        for entry in found.leftovers:
            path = os.path.join(run_dir, entry)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)  # never follows a link inside
            else:
                files.remove(path)  # a link is removed itself
        if found.mode != "finished" or found.adopt:
            _write_marker(run_dir, config)
        return found
    except BaseException:
        runlock.release(run_dir)
        raise


def _loops(path: str) -> bool:
    try:
        os.stat(path)
    except OSError as e:
        return e.errno == errno.ELOOP
    return False


def make_logdir(logdir: str) -> None:
    """Create ``--logdir`` (and its parents) or say in one line why it cannot be one."""
    try:
        os.makedirs(logdir, exist_ok=True)
    except (FileExistsError, NotADirectoryError, OSError) as e:
        if e.errno == errno.ELOOP or _loops(logdir):
            raise LogdirError(
                f"--logdir {logdir} is a loop of symbolic links: give a writable folder"
            ) from None
        if isinstance(e, (FileExistsError, NotADirectoryError)):
            raise LogdirError(
                f"--logdir {logdir} is not a folder (a file, or a path through one): give a "
                "writable folder"
            ) from None
        raise
    if not os.path.isdir(logdir):
        raise LogdirError(f"--logdir {logdir} is not a folder: give a writable folder")


def _write_marker(run_dir: str, config) -> None:
    from lrbs_tf import __version__

    path = os.path.join(run_dir, MARKER)
    if not os.path.lexists(path):
        runio.write_json(
            path,
            {
                "lrbs_tf": __version__,
                "run_name": config.run_name,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            },
        )
