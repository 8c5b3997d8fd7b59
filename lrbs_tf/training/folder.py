"""A run folder as one object, :class:`RunFolder`: what it holds, who may write it, what may be
deleted, and its files. Pure Python (importing it loads no TensorFlow).

Rules (the reasons are in the README's "Nothing lost"):

* A run name is one plain path component (:func:`lrbs_tf.training.config.check_name`), so a
  run folder is always a direct child of ``--logdir``.
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
* One writer per run folder: :meth:`RunFolder.claim` holds an exclusive ``flock`` on
  ``.lrbs-lock`` inside the folder until :meth:`RunFolder.release` (the kernel drops it when
  a process dies, so a killed run never blocks the next one); tools that only read a run and
  add their own file (``probe.py``) hold it shared (:func:`lock` with ``shared=True``). A second
  writer is refused with :class:`RunBusyError`.

Everything is checked before anything is written.
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import glob
import hashlib
import importlib.metadata
import os
import platform
import shutil
import socket
import stat
import sys
import time

from lrbs_tf import files
from lrbs_tf.files import FileProblem, UnsafeFileError
from lrbs_tf.training.config import changed_sources, describe_differences, differences

STATUSES = ("running", "finished", "diverged", "interrupted", "failed")
MARKER, LOCK, RESERVE = ".lrbs-run", ".lrbs-lock", ".lrbs-reserve"
RESERVE_BYTES = 256 * 1024
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
OWN_FOLDERS = ("ckpt", "tb", "snapshots")
OVERWRITE_NOTE = (
    "; nothing was changed. --overwrite would delete this run folder and train the run from scratch"
)


class RunFolderError(FileProblem):
    """A run folder that is missing, corrupt or half-written."""


class RunExistsError(RunFolderError):
    """The run folder holds another run, or something that is not a run."""


class RunDamagedError(RunFolderError):
    """The run folder is damaged; nothing was changed."""


class LogdirError(RunFolderError):
    """``--logdir`` cannot be a folder we can write (exit status 1, like an unwritable one)."""


class RunBusyError(RunFolderError):
    """Another process holds the run folder."""


class DiskFullError(OSError):
    """The disk of a run folder is full; the run is marked ``failed`` and can be resumed once
    there is space."""


def disk_full(error: BaseException) -> bool:
    """Is ``error`` (an OSError, or TensorFlow's or h5py's wrapping of one) a full disk?"""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(error)
    return "No space left on device" in text or "Disk quota exceeded" in text


class RunFolder:
    """The folder of one run, claimed by this process: locked (exclusively) from
    :meth:`claim` to :meth:`release`, with what :func:`inspect` found in it (``found``), a disk
    reserve while the run trains, and the run's own files. ``RunFolder.look(config)`` only
    inspects (the other workers of a multi-worker run, which never write it)."""

    def __init__(self, path: str, found: Inspection, locked: bool, temporary: bool = False):
        self.path, self.found, self.locked, self.temporary = path, found, locked, temporary
        self.created = False  # made by this claim: removed again if the run wrote nothing

    @classmethod
    def claim(cls, config, reserve: bool = True) -> RunFolder:
        """Create or inspect the run folder, lock it, clear lrbs_tf's own leftovers of an
        unstarted run (or of any run, with ``--overwrite``), mark it ours, and hold a disk
        reserve (``reserve``) unless the run is finished. Re-entrant within a process."""
        run_dir = config.run_dir
        make_logdir(config.logdir)
        found = inspect(config)
        created = False
        if found.mode == "new" and not found.ours:
            try:
                os.mkdir(run_dir)
                created = True
            except FileExistsError:  # another process made it just now
                found = inspect(config)
        if config.overwrite:  # a link or FIFO in place of the lock or the reserve: remove it
            for name in (LOCK, RESERVE):
                path = os.path.join(run_dir, name)
                if os.path.islink(path) or (os.path.lexists(path) and not os.path.isfile(path)):
                    files.remove(path)
        lock(run_dir)
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
            folder = cls(run_dir, found, locked=True)
            if created:
                _created.add(os.path.realpath(run_dir))
            folder.created = os.path.realpath(run_dir) in _created
            if reserve and found.mode != "finished":
                folder.reserve()
            return folder
        except BaseException:
            unlock(run_dir)
            raise

    @classmethod
    def look(cls, config) -> RunFolder:
        """What the folder holds, without locking or changing it."""
        return cls(config.run_dir, inspect(config), locked=False)

    @classmethod
    def scratch(cls) -> RunFolder:
        """A temporary folder, removed by :meth:`release`: where a worker other than the chief
        of a multi-worker run writes (it runs the same steps, as the collectives need, but
        the run folder is the chief's)."""
        import tempfile

        return cls(tempfile.mkdtemp(prefix="lrbs-worker-"), Inspection("new"), False, True)

    def release(self) -> None:
        """Free the reserve and undo the lock of :meth:`claim` (remove a :meth:`scratch`
        folder); once."""
        if self.locked:
            self.free_reserve()
            if self.created and set(os.listdir(self.path)) <= {MARKER, LOCK}:
                files.remove(self.file(MARKER))  # a failure before the run wrote anything
                files.remove(self.file(LOCK))
                os.rmdir(self.path)
                _created.discard(os.path.realpath(self.path))
            unlock(self.path)
            self.locked = False
        if self.temporary:
            shutil.rmtree(self.path, ignore_errors=True)
            self.temporary = False

    def __enter__(self) -> RunFolder:
        return self

    def __exit__(self, *exc) -> bool:
        self.release()
        return False

    # -- its files ---------------------------------------------------------------------------
    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    def write_json(self, name: str, data) -> None:
        """``name`` in the folder, written atomically (never through a link)."""
        files.write_json(self.file(name), data)

    def save_model(self, model) -> dict:
        """``model.keras``: serialised in memory (:func:`lrbs_tf.compat.save_model_bytes`),
        written atomically; returns its size and SHA-1 (recorded in results.json and checked
        whenever the run is reused)."""
        from lrbs_tf import compat

        data = compat.save_model_bytes(model)
        files.write_bytes(self.file("model.keras"), data)
        return {"model_bytes": len(data), "model_sha1": hashlib.sha1(data).hexdigest()}

    def save_snapshot(self, model, epoch: int) -> str:
        """``snapshots/epoch-NNNN.keras``: the model after ``epoch`` (1-based), kept when the
        run finishes (``keep_epochs``), written atomically; returns its path."""
        from lrbs_tf import compat

        files.make_folder(self.file("snapshots"))
        path = self.file(os.path.join("snapshots", snapshot_name(epoch)))
        files.write_bytes(path, compat.save_model_bytes(model))
        return path

    def check_older_model(self, results: dict) -> None:
        """A finished run saved before model digests were recorded: compare the weights of its
        model.keras with the recorded weights digest."""
        if results.get("model_sha1") is not None:
            return
        from lrbs_tf.models.registry import load_model

        try:
            model = load_model(self.file("model.keras"), compile=False)
        except Exception as e:  # a truncated zip or h5 raises many types
            raise _damaged(
                self.path, f"model.keras cannot be loaded ({type(e).__name__})"
            ) from None
        if results.get("weights_sha1") not in (None, weights_digest(model)):
            raise _damaged(
                self.path, "the weights in model.keras do not match the digest in results.json"
            )

    def reserve(self) -> None:
        """Hold some disk space (freed by :meth:`free_reserve` when the disk is full, so that
        the failure can still be recorded in results.json). Never through a link."""
        path = self.file(RESERVE)
        fd = _open_own(path, os.O_WRONLY | os.O_CREAT, "reserve")
        try:
            if os.fstat(fd).st_size < RESERVE_BYTES:
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

    def free_reserve(self) -> None:
        try:
            files.remove(self.file(RESERVE))
        except OSError:
            pass

    def remove_checkpoints(self) -> None:
        """``ckpt/``, once the run is finished (a link there is left alone, never followed)."""
        path = self.file("ckpt")
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)


def snapshot_name(epoch: int) -> str:
    return f"epoch-{epoch:04d}.keras"


def snapshot_epochs(run_dir: str) -> list[int]:
    """The epochs a run folder keeps a snapshot of (``snapshots/epoch-NNNN.keras``)."""
    folder = os.path.join(run_dir, "snapshots")
    if not os.path.isdir(folder) or os.path.islink(folder):
        return []
    names = os.listdir(folder)
    return sorted(int(n[6:10]) for n in names if n == snapshot_name(_number(n[6:10])))


def _number(text: str) -> int:
    return int(text) if text.isdigit() else -1


def weights_digest(model) -> str:
    """SHA-1 of all of a model's weights, in order (recorded in results.json)."""
    import numpy as np

    digest = hashlib.sha1()
    for w in model.weights:
        digest.update(np.asarray(w.numpy()).tobytes())
    return digest.hexdigest()


def _open_own(path: str, flags: int, what: str) -> int:
    """Open one of lrbs_tf's own files without following a link and without blocking on a
    FIFO; anything but a regular file is refused (:class:`~lrbs_tf.files.UnsafeFileError`)."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENXIO, errno.EISDIR):
            files.check_entry(path)  # raises, naming what is there
        raise
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise UnsafeFileError(f"{path} is {files.kind(mode)}, not lrbs_tf's {what}")
    return fd


# -- the lock --------------------------------------------------------------------------------

_held: dict = {}  # realpath of a run folder -> [file descriptor, count]


def lock(run_dir: str, shared: bool = False) -> None:
    """Hold ``run_dir``'s ``flock`` for this process (re-entrant), or raise
    :class:`RunBusyError`. ``shared``: for a reader, which may run beside other readers but not
    beside training. The lock file is opened without following a link and must be a regular
    file: a link or FIFO in its place is refused, never truncated."""
    key = os.path.realpath(run_dir)
    if key in _held:
        _held[key][1] += 1
        return
    fd = _open_own(os.path.join(run_dir, LOCK), os.O_RDWR | os.O_CREAT, "lock file")
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
    _held[key] = [fd, 1]


_created: set = set()  # run folders this process made (real paths)


def unlock(run_dir: str) -> None:
    """Undo one :func:`lock`; the lock is dropped when the last one is undone."""
    key = os.path.realpath(run_dir)
    if key not in _held:
        return
    _held[key][1] -= 1
    if _held[key][1] <= 0:
        os.close(_held.pop(key)[0])


# -- what a folder holds -----------------------------------------------------------------------


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
    data: dict | None = None  # the data record of the run's config.json (its fingerprints)


def check_same_data(found: Inspection, data, run_dir: str) -> None:
    """A run resumes only on the data it started with: the fingerprints of its training and
    validation splits (recorded in config.json) must match the data loaded now."""
    before = found.data or {}
    for split in ("train", "validation"):
        key = f"{split}_fingerprint"
        if before.get(key) and before[key] != data.info.get(key):
            raise RunExistsError(
                f"{run_dir}: the {split} data changed since the run started (fingerprint "
                f"{before[key]} then, {data.info.get(key)} now); a run continues only on the "
                "data it started with: restore it, or pass --overwrite or another --name"
            )


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
    marks = shaped(marks_path, "marks") if os.path.exists(marks_path) else {}
    if "config.json" not in has:
        if valuable:
            raise _damaged(
                run_dir, f"config.json is missing (the folder holds {', '.join(valuable)})"
            )
        return Inspection("new", ours=True, leftovers=entries)
    saved = shaped(os.path.join(run_dir, "config.json"), "config")
    changed = changed_sources(saved["config"], config)
    if changed:
        raise RunExistsError(
            f"{run_dir}: {changed}; a run continues only with the model it started with: "
            "restore it, or pass --overwrite or another --name"
        )
    differ = differences(saved["config"], config)
    if differ:
        raise RunExistsError(other_settings(run_dir, differ))
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
    results = shaped(os.path.join(run_dir, "results.json"), "results")
    if results["status"] in ("finished", "diverged"):
        _check_model(run_dir, results)
        return Inspection("finished", ours=True, results=results)
    if state is not None:
        _check_event_files(run_dir, marks)
        return Inspection("resume", ours=True, results=results, data=saved.get("data"))
    if results["epochs"] or "model.keras" in has:
        raise _damaged(
            run_dir,
            f"results.json says {results['status']!r} with "
            f"{len(results['epochs'])} epoch(s) recorded, but there is no "
            "checkpoint to resume from",
        )
    return Inspection("new", ours=True, leftovers=entries)  # stopped before its first epoch


def other_settings(run_dir: str, differ: list) -> str:
    """Why a run folder is not this run's: the settings that differ; a probe that differs
    needs no retraining."""
    what = describe_differences(differ)
    if all(name.startswith("probe") for name, _, _ in differ):
        return (
            f"{run_dir} holds this run with other probe settings ({what}); a finished run is "
            f"probed without retraining: python tools/probe.py {run_dir} (its flags set the "
            "probe); --overwrite trains it again with these"
        )
    return (
        f"{run_dir} holds a run with other settings ({what}); pass --overwrite to replace it "
        "or --name to choose another folder"
    )


def _checked_state(run_dir: str, path: str) -> dict:
    state = shaped(path, "state")
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


def _check_event_files(run_dir: str, marks: dict) -> None:
    problem = damaged_event_file(os.path.join(run_dir, "tb"), marks)
    if problem:
        raise _damaged(run_dir, problem)


def event_file_sizes(tb: str) -> dict:
    """``{"train/events.out.tfevents…": bytes}`` for every event file under ``tb``."""
    pattern = os.path.join(tb, "*", "events.out.tfevents.*")
    return {os.path.relpath(p, tb): os.path.getsize(p) for p in sorted(glob.glob(pattern))}


def damaged_event_file(tb: str, marks: dict) -> str | None:
    """What is wrong with the event files that ``marks`` (``tb/written.json``) vouch for: one
    missing or shorter than when it was marked; None when all are whole (or the marks are
    from an lrbs_tf that recorded no sizes)."""
    for name, size in (marks.get("files") or {}).items():
        path = os.path.join(tb, name)
        now = os.path.getsize(path) if os.path.isfile(path) else None
        if now is None or now < size:
            return (
                f"tb/{name} is {'missing' if now is None else f'cut short ({now} bytes of {size})'}"
                ": TensorBoard would lack steps and epochs the run's record says were written"
            )
    return None


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


# -- reading run folders: JSON of the right shape, digests --------------------------------------


def read_json(path: str):
    """The JSON file ``path`` (a regular file, not through a link); :class:`RunFolderError`
    if it is missing, of the wrong kind or corrupt."""
    try:
        return files.read_json(path)
    except FileProblem as e:
        raise RunFolderError(str(e)) from None


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
        return _epochs_problem(data["epochs"])
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
        sizes = data.get("files", {})
        if not all(_is_int(v) for k, v in data.items() if k != "files"):
            return "marks are not whole numbers"
        if not isinstance(sizes, dict) or not all(
            _is_int(v) and _plain_event_name(k) for k, v in sizes.items()
        ):
            return "'files' is not a table of event files and sizes"
    return None


EPOCH_NUMBERS = (
    "train_loss", "train_accuracy", "validation_loss", "validation_accuracy", "test_loss",
    "test_accuracy", "weights_loss", "weights_accuracy", "fraction", "wall_time",
    "batch_size", "lr", "ratio",
)  # fmt: skip


def _epochs_problem(records: list) -> str | None:
    """What is wrong with a run's epoch records: each needs its epoch (1, 2, … in order), its
    steps, and numbers (or null) where numbers are recorded."""
    for i, record in enumerate(records, start=1):
        if record.get("epoch") != i or not _is_int(record.get("steps")):
            return f"epoch record {i} lacks its epoch number or steps"
        for key in EPOCH_NUMBERS:
            value = record.get(key)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, (int, float))
            ):
                return f"epoch record {i} has {key} {value!r}, not a number"
        if not _ranges(record.get("within_epoch", {})):
            return f"epoch record {i} has within_epoch {record['within_epoch']!r}, not ranges"
    return None


def _ranges(value) -> bool:
    """``{"batch_size"|"lr"|"ratio": [low, high]}`` (numbers), as an epoch record holds."""
    return isinstance(value, dict) and all(
        key in ("batch_size", "lr", "ratio")
        and isinstance(pair, list)
        and len(pair) == 2
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in pair)
        for key, pair in value.items()
    )


def _recorded_number(value) -> bool:
    """A recorded number: null, an int or float, or (written by lrbs_tf 0.2) 'nan'/'inf'."""
    if value is None or value in ("nan", "inf", "-inf"):
        return True
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _plain_event_name(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and all(p not in ("", ".", "..") for p in parts)


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
        files.write_json(
            path,
            {
                "lrbs_tf": __version__,
                "run_name": config.run_name,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            },
        )
