"""Files lrbs_tf reads and writes: atomic, never through a symbolic link, regular files only.

Every file lrbs_tf writes (run folders, tables, figures) goes through :func:`write_bytes`: the
data go to a new temporary file beside the target, created with ``O_EXCL | O_NOFOLLOW``
relative to the folder's descriptor, which is fsynced and renamed over the target. A crash
never leaves half a file, and a link planted in a folder is never followed: the folder itself
is opened with ``O_NOFOLLOW`` (a link in its place is refused), and a link, FIFO, socket or
device where the file should be is refused with :class:`UnsafeFileError` naming the path.
Reading (:func:`read_bytes`, :func:`read_json`) opens with ``O_NOFOLLOW | O_NONBLOCK`` and
accepts only a regular file, so a FIFO in place of ``results.json`` is refused at once instead
of blocking forever. JSON nested deeper than :data:`MAX_JSON_DEPTH` is refused too.

Only the last component of a path is protected: the folders *above* a run folder (``--logdir``
and its parents) are the user's and may be links. Pure Python.
"""

from __future__ import annotations

import errno
import json
import math
import os
import secrets
import stat

MAX_JSON_DEPTH = 64  # lrbs_tf's own files nest at most 6 levels


class FileProblem(RuntimeError):
    """A file that is missing, corrupt or of the wrong kind; the message is one line."""


class UnsafeFileError(FileProblem):
    """A symbolic link, FIFO, socket or device where lrbs_tf expects its own file or folder."""


def kind(mode: int) -> str:
    """``'a symbolic link'``, ``'a FIFO'`` … for the ``st_mode`` of something that is not a
    regular file."""
    for test, name in (
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISDIR, "a folder"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def check_entry(path: str, folder: bool = False) -> bool:
    """Is ``path`` absent (False) or a real file (a real folder with ``folder``) (True)?
    Anything else — a link above all — raises :class:`UnsafeFileError`."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return False
    if stat.S_ISDIR(mode) if folder else stat.S_ISREG(mode):
        return True
    raise UnsafeFileError(
        f"{path} is {kind(mode)}, not a {'folder' if folder else 'file'} lrbs_tf wrote"
    )


def open_folder(path: str) -> int:
    """A descriptor of the folder ``path``, refusing a link in its place (last component)."""
    try:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOTDIR):
            check_entry(path, folder=True)  # names what is there instead
        raise


def make_folder(path: str) -> None:
    """``mkdir -p`` whose last component must be (or become) a real folder, not a link."""
    if check_entry(path, folder=True):
        return
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    try:
        os.mkdir(path)
    except FileExistsError:
        check_entry(path, folder=True)


_UMASK = os.umask(0)
os.umask(_UMASK)


def write_bytes(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary file, fsync, rename), never through a
    link; on any failure (a full disk included) the temporary file is removed."""
    folder, name = os.path.split(os.path.abspath(path))
    dir_fd = open_folder(folder)
    try:
        _refuse_unsafe(path, name, dir_fd)
        tmp = f".tmp-{secrets.token_hex(6)}-{name}"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(tmp, flags, 0o666, dir_fd=dir_fd)  # the umask applies, as for open()
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            try:
                os.unlink(tmp, dir_fd=dir_fd)
            except OSError:
                pass
            raise
    finally:
        os.close(dir_fd)


def _refuse_unsafe(path: str, name: str, dir_fd: int) -> None:
    try:
        mode = os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISREG(mode):
        raise UnsafeFileError(f"{path} is {kind(mode)}: lrbs_tf writes only its own files")


def write_text(path: str, text: str) -> None:
    write_bytes(path, text.encode())


def read_bytes(path: str) -> bytes:
    """The content of the regular file ``path`` (not through a link; a FIFO is refused at
    once)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise FileProblem(f"{path} is missing") from None
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.EISDIR, errno.ENXIO, errno.ENOTDIR):
            if e.errno != errno.ENOTDIR:
                check_entry(path)
            raise FileProblem(f"{path} is not a file") from None
        raise
    with os.fdopen(fd, "rb") as f:
        mode = os.fstat(f.fileno()).st_mode
        if not stat.S_ISREG(mode):
            raise UnsafeFileError(f"{path} is {kind(mode)}, not a file lrbs_tf wrote")
        return f.read()


def remove(path: str) -> None:
    """Remove the file ``path`` if it is there (a link is removed itself, never followed)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _depth(obj, limit: int) -> int:
    stack, deepest = [(obj, 1)], 0
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (dict, list)):
            deepest = max(deepest, depth)
            if deepest > limit:
                return deepest
            children = value.values() if isinstance(value, dict) else value
            stack.extend((child, depth + 1) for child in children)
    return deepest


def read_json(path: str):
    """Parse the JSON file ``path`` (non-finite numbers restored, see :func:`jsonable`);
    :class:`FileProblem` if it is missing, not a regular file, corrupt or nested deeper than
    :data:`MAX_JSON_DEPTH`."""
    raw = read_bytes(path)
    try:
        data = json.loads(raw.decode())
    except RecursionError:
        raise FileProblem(f"{path} is corrupt (nested too deeply)") from None
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError) as e:
        raise FileProblem(f"{path} is corrupt ({str(e)[:200]})") from None
    if _depth(data, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        raise FileProblem(f"{path} is corrupt (nested more than {MAX_JSON_DEPTH} levels)")
    return restore_nonfinite(data)


NONFINITE = "_nonfinite"  # suffix of the key that says what a null number was


def jsonable(obj):
    """JSON-safe copy: numpy scalars to Python; a non-finite float is never a string: in an
    object it becomes ``null`` with a sibling ``<key>_nonfinite`` (``"inf"``, ``"-inf"`` or
    ``"nan"``), elsewhere ``null``. :func:`read_json` restores the floats."""
    if isinstance(obj, dict):
        out = {}
        for key, value in obj.items():
            value = jsonable(value)
            out[str(key)] = value
            if value is None and _nonfinite(obj[key]):
                out[f"{key}{NONFINITE}"] = str(_scalar(obj[key]))
        return out
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    obj = _scalar(obj)
    return None if _nonfinite(obj) else obj


def _scalar(obj):
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 1) == 0:
        return obj.item()
    return obj


def _nonfinite(obj) -> bool:
    obj = _scalar(obj)
    return isinstance(obj, float) and not math.isfinite(obj)


def restore_nonfinite(obj):
    """The inverse of :func:`jsonable`'s notes: ``null`` + ``<key>_nonfinite`` → the float."""
    if isinstance(obj, list):
        return [restore_nonfinite(v) for v in obj]
    if not isinstance(obj, dict):
        return obj
    out = {}
    for key, value in obj.items():
        note = obj.get(f"{key}{NONFINITE}")
        if value is None and note in ("inf", "-inf", "nan"):
            out[key] = float(note)
        elif not (key.endswith(NONFINITE) and obj.get(key[: -len(NONFINITE)], 0) is None):
            out[key] = restore_nonfinite(value)
    return out


def write_json(path: str, data) -> None:
    """Write ``data`` to ``path`` as JSON, atomically."""
    write_text(path, json.dumps(jsonable(data), indent=2) + "\n")


def write_csv(path: str, rows: list[dict], fields: list[str]) -> None:
    """Write ``rows`` (dicts) as CSV with the given columns, atomically."""
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    writer.writerows([{k: _scalar(v) for k, v in row.items()} for row in rows])
    write_text(path, buffer.getvalue())


def save_figure(figure, path: str, dpi: int = 110) -> str:
    """Save a matplotlib ``figure`` as PNG to ``path`` atomically; returns ``path``."""
    import io

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    write_bytes(path, buffer.getvalue())
    return path
