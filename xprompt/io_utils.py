"""Atomic file and directory writes, write locks, and clear errors for full or read-only disks.

Nothing already on disk may be damaged by an interrupted or failed write: files are written to a temp file in
the same directory and renamed; directories are built under a temp name and swapped in at the end.

Design choices
* The directory swap uses Linux ``renameat2(RENAME_EXCHANGE)`` (through ctypes: Python has no binding), so the
  old and the new directory trade places in one atomic step and a ``kill -9`` at any moment leaves either the
  old or the new one at the path. Where the call or the filesystem does not support it, the old directory is
  moved aside and the new one moved in (two renames; a kill between them leaves the old one under
  ``.NAME.old-PID``, which the next write of that path restores, see ``_recover``).
* ``atomic_dir`` holds an exclusive ``flock`` on ``.NAME.lock`` beside the target while it builds: a second
  process writing the same output fails at once with a one-line error instead of mixing its files in. The
  kernel drops the lock when its holder dies, so a killed writer never blocks the next one (its empty lock
  file stays until then). The holder removes the file on release; a taker checks that the file it locked
  is still the one at the path, so the removal cannot let two writers in.
* A write that fails because the disk is full, over quota, the file too large, the filesystem read-only or
  the directory not writable
  (whichever library did the writing: safetensors, FAISS, Arrow...) becomes one ``XPromptError`` line saying
  so; the temp files are removed and the previous output is untouched.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import fcntl
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from xprompt.errors import XPromptError

# errnos of a write that failed for lack of room or permission to write, not because of a bug
DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES)
_NO_ROOM = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def _disk_error(exc: BaseException) -> str | None:
    """The reason text if ``exc`` (or what it was raised from) is a full/read-only-disk error, else None.

    Libraries in C++ or Rust report these as their own exception types carrying the OS message, so the
    message is matched too."""
    reasons = [os.strerror(e) for e in DISK_ERRNOS]
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, OSError) and exc.errno in DISK_ERRNOS:
            return os.strerror(exc.errno)
        text = str(exc)
        for r in reasons:
            if r.lower() in text.lower():
                return r
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return None


@contextlib.contextmanager
def _disk_errors(path: Path) -> Iterator[None]:
    try:
        yield
    except XPromptError:
        raise
    except Exception as e:
        reason = _disk_error(e)
        if reason is None:
            raise
        room = reason in [os.strerror(n) for n in _NO_ROOM]
        raise XPromptError(
            f"cannot write {path}: {reason}; {'free some space' if room else 'make it writable'} or choose "
            "another output (nothing was changed at that path)"
        ) from None


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    with _disk_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual permissions
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode a plain new file gets here (0o666 minus the umask): for files a library wrote as 0600."""
    return 0o666 & ~_umask()


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path beside ``path``; on success it is renamed onto ``path`` (file or directory)."""
    path = Path(path)
    with _disk_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    target = tmp / path.name
    try:
        with _disk_errors(path):
            yield target
            replace_path(target, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def write_lock(path: str | Path) -> Iterator[None]:
    """Hold an exclusive lock for writing ``path`` (file ``.NAME.lock`` beside it, removed on release); if
    another process holds it, raise ``XPromptError`` at once rather than wait (two writers of one output are
    a mistake)."""
    path = Path(path)
    lock = path.parent / f".{path.name}.lock"
    while True:
        with _disk_errors(path):
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise XPromptError(
                f"another process is writing {path} right now; wait for it to finish or choose another output"
            ) from None
        try:  # the holder before us may have removed the file after we opened it: lock the live one
            if os.stat(lock).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock)  # while still locked, so no one can be holding the removed file
        os.close(fd)


def _recover(path: Path) -> None:
    """Under the write lock: restore a directory left aside by a two-rename swap that was killed between its
    renames, and remove temp dirs of writers that died (no live writer can own them: we hold the lock)."""
    olds = sorted(path.parent.glob(f".{path.name}.old-*"), key=lambda p: p.stat().st_mtime)
    if olds and not path.exists():
        os.replace(olds.pop(), path)
    for stale in olds + list(path.parent.glob(f".{path.name}.*.tmp")):
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: str | Path, *, overwrite: bool = False, marker: str | None = None) -> Iterator[Path]:
    """Build a directory under a temp name and swap it onto ``path`` when the block succeeds.

    An existing ``path`` is only replaced when ``overwrite`` is true and (if ``marker`` is given) it contains
    the file ``marker`` (i.e. it is one of ours); otherwise ``XPromptError`` is raised before anything is
    written. An interrupted build leaves the previous directory intact; a concurrent writer of the same path
    gets an ``XPromptError`` (``write_lock``).
    """
    path = Path(path)
    with write_lock(path):
        _recover(path)
        if path.exists():
            if not path.is_dir():
                raise XPromptError(f"{path} exists and is not a directory; choose another output path")
            if any(path.iterdir()):
                if not overwrite:
                    raise XPromptError(
                        f"{path} exists and is not empty; pass --overwrite or choose another path"
                    )
                if marker is not None and not (path / marker).exists():
                    raise XPromptError(
                        f"{path} exists but is not an xprompt output (no {marker}); refusing to overwrite it"
                    )
        with atomic_path(path) as tmp:
            tmp.mkdir()
            yield tmp


_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100


def _libc():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    except OSError:
        return None


_LIBC = _libc()


def exchange_paths(a: Path, b: Path) -> bool:
    """Atomically swap two existing paths (Linux ``renameat2``); False where unsupported (then nothing moved)."""
    fn = getattr(_LIBC, "renameat2", None)
    if fn is None:
        return False
    rc = fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EPERM):
        return False  # kernel or filesystem without RENAME_EXCHANGE
    raise OSError(err, os.strerror(err), str(b))


def replace_path(src: Path, dst: Path) -> None:
    """Move ``src`` onto ``dst`` atomically; an existing ``dst`` is swapped out and removed after the swap."""
    src, dst = Path(src), Path(dst)
    if dst.is_dir() and not dst.is_symlink() and src.is_dir() and exchange_paths(src, dst):
        shutil.rmtree(src, ignore_errors=True)  # ``src`` now holds the old directory
        return
    if dst.exists():
        old = dst.with_name(f".{dst.name}.old-{os.getpid()}")
        os.replace(dst, old)
        try:
            os.replace(src, dst)
        except BaseException:
            os.replace(old, dst)
            raise
        if old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)
    else:
        os.replace(src, dst)
