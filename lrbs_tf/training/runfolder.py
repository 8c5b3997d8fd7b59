"""Run folders: what a folder holds, who may write it, and what may be deleted. Pure Python.

Rules (the reasons are in the README's "Nothing lost"):

* A run name is one plain path component (letters, digits and ``._=+-``, not starting with a
  dot), so a run folder is always a direct child of ``--logdir``.
* lrbs_tf deletes only what it can prove it wrote: a folder holding its marker file
  ``.lrbs-run`` (written when it creates a run folder), or a run folder of an earlier version
  (a ``config.json`` with lrbs_tf's structure). Any other existing, non-empty folder is refused,
  even with ``--overwrite``.
* A damaged run folder — JSON of the wrong shape, a finished run without its config or model,
  a model that does not match its recorded digest, recorded epochs without a checkpoint to
  resume them, a checkpoint whose weights do not match ``state.json`` — is refused with a
  message saying what is damaged; nothing is deleted without ``--overwrite``.
* One process per run folder: :func:`claim` holds an exclusive ``flock`` on ``.lrbs-lock``
  inside the folder until :func:`release` (the kernel drops it when a process dies, so a
  killed run never blocks the next one). A second process is refused with
  :class:`~lrbs_tf.training.runlock.RunBusyError`.

Everything is checked before anything is written.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import shutil
import time

from lrbs_tf.training import runio, runlock
from lrbs_tf.training.runio import RESERVE, RunFolderError, read_json, sha1_of
from lrbs_tf.training.runlock import LOCK

MARKER = ".lrbs-run"
NAME = re.compile(r"[A-Za-z0-9_=+-][A-Za-z0-9._=+-]*")


class RunExistsError(RunFolderError):
    """The run folder holds another run, or something that is not a run."""


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
    are files of an unstarted run of ours to remove before starting."""

    mode: str
    ours: bool = False
    leftovers: list = dataclasses.field(default_factory=list)
    results: dict | None = None
    legacy: bool = False  # a run folder of an earlier lrbs_tf, without the marker


def _entries(run_dir: str) -> list[str]:
    return [
        e for e in os.listdir(run_dir) if e not in (LOCK, RESERVE) and not e.startswith(".tmp-")
    ]


def ours(run_dir: str) -> tuple[bool, bool]:
    """``(ours, legacy)``: does lrbs_tf own this folder (marker, or an earlier version's
    config.json)?"""
    if os.path.isfile(os.path.join(run_dir, MARKER)):
        return True, False
    try:
        saved = read_json(os.path.join(run_dir, "config.json"))
    except RunFolderError:
        return False, False
    legacy = (
        isinstance(saved, dict)
        and isinstance(saved.get("config"), dict)
        and isinstance(saved.get("versions"), dict)
        and "lrbs_tf" in saved["versions"]
    )
    return legacy, legacy


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
    mine, legacy = ours(run_dir)
    if not mine:
        raise RunExistsError(
            f"{run_dir} exists and is not an lrbs_tf run folder (no {MARKER} marker); "
            "lrbs_tf never deletes what it did not write: choose another --name or --logdir, "
            "or move the folder away"
        )
    if overwrite:
        return Inspection("new", ours=True, leftovers=entries, legacy=legacy)
    try:
        return _inspect_ours(config, run_dir, entries, legacy)
    except (RunExistsError, RunDamagedError):
        raise
    except RunFolderError as e:  # a file of ours that does not parse
        raise RunDamagedError(f"{e}{OVERWRITE_NOTE}") from None


OVERWRITE_NOTE = (
    "; nothing was changed. --overwrite would delete this run folder and train the run from scratch"
)


def _damaged(run_dir: str, what: str) -> RunDamagedError:
    return RunDamagedError(f"{run_dir} is damaged: {what}{OVERWRITE_NOTE}")


def _inspect_ours(config, run_dir, entries, legacy) -> Inspection:
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
        return Inspection("finished", ours=True, results=results, legacy=legacy)
    if state is not None:
        return Inspection("resume", ours=True, results=results, legacy=legacy)
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
    from lrbs_tf.training.runio import _clean

    skip = {"overwrite", "resume", "logdir", "strategy", "devices", "cpu_devices", "peer_timeout"}
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
    """Create or inspect the run folder, lock it for this process, and clear the leftovers of
    an unstarted run (or everything, with ``--overwrite``). Re-entrant within a process."""
    run_dir = config.run_dir
    os.makedirs(config.logdir, exist_ok=True)
    found = inspect(config)
    if found.mode == "new" and not found.ours:
        try:
            os.mkdir(run_dir)
        except FileExistsError:  # another process made it just now
            found = inspect(config)
    runlock.acquire(run_dir)
    try:
        found = inspect(config)  # again, now that no one else can change it
        if found.leftovers:
            for entry in found.leftovers:
                path = os.path.join(run_dir, entry)
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path)
                else:
                    os.remove(path)
        if found.mode != "finished" or found.legacy:
            _write_marker(run_dir, config)
        return found
    except BaseException:
        runlock.release(run_dir)
        raise


def _write_marker(run_dir: str, config) -> None:
    from lrbs_tf import __version__

    path = os.path.join(run_dir, MARKER)
    if not os.path.exists(path):
        runio.write_json(
            path,
            {
                "lrbs_tf": __version__,
                "run_name": config.run_name,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            },
        )
