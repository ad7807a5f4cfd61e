"""Atomic file writes: results and checkpoints are never left half-written.

A file is written under a temporary name beside its destination, flushed to disk and renamed into place, so a
reader (or a crash) sees the old file or the new one, never a mixture. The new file gets the permissions an
ordinary ``open(path, "w")`` would give it (0666 less the umask), or keeps those of the file it replaces.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` for a writer that needs a file name (h5py, ``np.save``); renamed to
    ``path`` when the block ends without an error, removed when it raises.

    The temporary file already exists (empty, with the final permissions) when the block starts.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = stat.S_IMODE(path.stat().st_mode)  # replacing a file: keep its permissions
    except FileNotFoundError:
        mode = None
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:  # created the way open() creates a file, so the umask applies (tempfile.mkstemp would give 0600)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            break
        except FileExistsError:
            continue
    try:
        if mode is not None:
            os.fchmod(fd, mode)
        os.close(fd)
        yield tmp
        with open(tmp, "rb+") as fh:  # whatever wrote it, its bytes are on disk before the rename
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.filename is None or Path(exc.filename) == tmp:  # a failed write (a full disk): name the file meant
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to a temporary file beside ``path`` and rename it into place (see :func:`atomic_path`)."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(data)
    return path


def atomic_write_many(files: dict[Path, bytes]) -> None:
    """Write several files so that a failure leaves every one of them as it was: each is first written in full to
    a temporary file beside it (see :func:`atomic_path`); only when all are written are they renamed into place,
    in the order given. A write that fails (a full disk) removes every temporary file and names its file."""
    with ExitStack() as stack:  # leaving it renames the files, last entered first: so enter them in reverse
        for path, data in reversed(list(files.items())):
            tmp = stack.enter_context(atomic_path(Path(path)))
            with open(tmp, "wb") as fh:
                fh.write(data)


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json_text(obj))


def json_text(obj: Any) -> str:
    """``obj`` as the JSON text :func:`atomic_write_json` writes (indented; NumPy values and paths as plain ones)."""
    return json.dumps(obj, indent=2, sort_keys=False, default=_default) + "\n"


def _default(o: Any) -> Any:
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


LOCK_NAME = ".lock"
"""The file inside a locked directory that :func:`run_lock` holds the lock on (and records the holder's PID in)."""


@contextmanager
def run_lock(directory: str | Path, *, shared: bool = False, what: str = "run directory",
             wait: bool = False) -> Iterator[Path]:
    """Hold an operating-system lock (``fcntl.flock``) on ``directory`` for the duration of the block.

    ``shared=False`` (training into the directory) excludes every other holder; ``shared=True`` (only reading its
    checkpoints) excludes only exclusive holders. A second process is refused at once with
    :class:`mmfusion.errors.RunLockedError`, naming the directory and the PID of the process that holds it. The
    kernel releases the lock when its process ends, however it ends (SIGKILL included), so a lock left by a dead
    process never blocks. The directory is created if needed; the lock file ``.lock`` stays in it (removing it
    while another process waits on it would let two processes hold "the" lock at once). ``what`` names the
    directory in the refusal ("this run directory is in use by process 1234"). ``wait=True`` waits for the holder
    instead (for short writes that many processes make in turn). Where ``fcntl`` does not exist (Windows), nothing
    is locked.
    """
    from mmfusion.errors import RunLockedError

    try:
        import fcntl
    except ImportError:  # pragma: no cover - not a POSIX system: no locking
        fcntl = None
    directory = Path(directory)
    path = directory / LOCK_NAME
    if fcntl is None or (shared and not os.access(directory, os.W_OK)):  # a read-only copy: nobody trains in it
        yield directory
        return
    directory.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            holder = _lock_holder(fd)
            os.close(fd)
            raise RunLockedError(directory, holder, what) from None
        except BaseException:
            os.close(fd)
            raise
        try:  # the file may have been removed (its directory deleted) between open and lock: lock the new one
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        if not shared:  # the holder's PID, for the message a refused process prints
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield directory
    finally:
        if not shared:
            try:
                os.ftruncate(fd, 0)  # no PID once released (a reader's later shared lock records none)
            except OSError:
                pass
        os.close(fd)  # releases the lock


def _lock_holder(fd: int) -> int | None:
    """The PID recorded in a lock file (None if it records none: a reader's shared lock, or a damaged file)."""
    try:
        text = os.pread(fd, 32, 0).decode("ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    if not text.isdigit():
        return None
    try:  # a PID left by a holder that was killed is not the process holding the lock now
        os.kill(int(text), 0)
    except ProcessLookupError:
        return None
    except OSError:
        pass
    return int(text)
