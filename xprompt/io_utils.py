"""Atomic file and directory writes.

Nothing already on disk may be damaged by an interrupted or failed write: files are written to a temp file in
the same directory and renamed; directories are built under a temp name and swapped in at the end.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from xprompt.errors import XPromptError


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
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
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    target = tmp / path.name
    try:
        yield target
        replace_path(target, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def atomic_dir(path: str | Path, *, overwrite: bool = False, marker: str | None = None) -> Iterator[Path]:
    """Build a directory under a temp name and swap it onto ``path`` when the block succeeds.

    An existing ``path`` is only replaced when ``overwrite`` is true and (if ``marker`` is given) it contains
    the file ``marker`` (i.e. it is one of ours); otherwise ``XPromptError`` is raised before anything is
    written. An interrupted build leaves the previous directory intact.
    """
    path = Path(path)
    if path.exists():
        if not path.is_dir():
            raise XPromptError(f"{path} exists and is not a directory; choose another output path")
        if any(path.iterdir()):
            if not overwrite:
                raise XPromptError(f"{path} exists and is not empty; pass --overwrite or choose another path")
            if marker is not None and not (path / marker).exists():
                raise XPromptError(
                    f"{path} exists but is not an xprompt output (no {marker}); refusing to overwrite it"
                )
    with atomic_path(path) as tmp:
        tmp.mkdir()
        yield tmp


def replace_path(src: Path, dst: Path) -> None:
    """Move ``src`` onto ``dst``; an existing ``dst`` is moved aside first and removed only after the swap."""
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
