"""Atomic file writes: the content goes to a temporary file in the same folder, is flushed to disk,
and is renamed over the target, so a reader (or a run killed mid-write) never sees a partial file."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable


def write_atomic(path: Path, content: str | bytes | Callable[[BinaryIO], None]) -> None:
    """Write ``content`` (text, bytes, or a function that writes into a binary file) to ``path``
    via a temporary file beside it, ``fsync`` and ``os.replace``; the folder is created if needed.
    On any error the temporary file is removed and ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
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
