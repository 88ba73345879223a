"""Disk faults while writing a cache (full disk, read-only folder, no permission) as one clear
:class:`~erc.errors.UserError` instead of a traceback: what failed, where, and what to do."""

from __future__ import annotations

import contextlib
import errno
import os
import re
from pathlib import Path
from typing import Iterator

from erc.errors import UserError

FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
DENIED = {errno.EROFS, errno.EACCES, errno.EPERM}


class CacheWriteError(UserError):
    """Writing a cache failed for a reason outside erc (disk full, read-only, permissions)."""


def errno_of(e: OSError) -> int | None:
    """The errno of an OSError, also when h5py only names it in the message (``errno = 28``)."""
    if e.errno:
        return int(e.errno)
    m = re.search(r"errno = (\d+)", str(e))
    if m:
        return int(m.group(1))
    text = str(e).lower()
    for code in (*FULL, *DENIED):
        if os.strerror(code).lower() in text:
            return code
    return None


@contextlib.contextmanager
def disk_errors(cache: Path, resume_hint: bool = True) -> Iterator[None]:
    """Turn a full disk / read-only folder / permission error while writing ``cache`` (or its
    journal, lock or group files) into a :class:`CacheWriteError` naming the cache's folder."""
    try:
        yield
    except OSError as e:
        code = errno_of(e)
        folder = Path(cache).parent
        where = f"{folder}/" if str(folder) not in ("", ".") else "the current folder"
        if code in FULL:
            hint = "; free some space and re-run the same command (finished batches are kept)" if resume_hint else \
                "; free some space and re-run"
            raise CacheWriteError(f"no space left on the device of {where} while writing {cache}{hint}") from None
        if code in DENIED:
            raise CacheWriteError(f"cannot write {cache}: {where} is not writable ({os.strerror(code)}); "
                                  "choose another --out") from None
        raise
