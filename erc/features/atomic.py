"""Atomic file writes: the content goes to a temporary file in the same folder, is flushed to disk,
and is renamed over the target, so a reader (or a run killed mid-write) never sees a partial file."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable


def _file_mode() -> int:
    """The mode ``open()`` gives a new file under this process's umask (mkstemp gives 0600)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


FILE_MODE = _file_mode()


def write_atomic(path: Path, content: str | bytes | Callable[[BinaryIO], None]) -> None:
    """Write ``content`` (text, bytes, or a function that writes into a binary file) to ``path``
    via a temporary file beside it, ``fsync`` and ``os.replace``; the folder is created if needed.
    On any error the temporary file is removed and ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            if callable(content):
                content(f)
            else:
                f.write(content.encode() if isinstance(content, str) else content)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def replace_with(path: Path, write: Callable[[Path], None]) -> None:
    """Create or replace ``path`` atomically with a file that ``write`` builds at a temporary path
    beside it (for writers that open the file by name themselves, such as HDF5): ``fsync``,
    ``os.replace``, then ``fsync`` of the folder. On any error the temporary file is removed and
    ``path`` is left as it was."""
    tmp = temp_path(path)
    try:
        write(tmp)
        fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def temp_path(path: Path) -> Path:
    """A fresh temporary name beside ``path`` (``.<name>.<random>.tmp``; the file is created empty
    so that the name is taken)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)
    return Path(tmp)


def fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def fsync_dir(folder: Path) -> None:
    """Make a rename inside ``folder`` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
