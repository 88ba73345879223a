"""Whether a built kernel may be loaded: loading a shared library runs its code in this process,
so the folder it comes from must be writable by this user only, and the library must be the very
file this erc built for the same source, flags, compiler and machine (a stamp beside it holds that
key and the library's SHA-256; a library without a matching stamp is built again)."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

from erc.errors import UserError


def check_private(folder: Path, sticky_ok: bool = False) -> None:
    """UserError when ``folder`` is writable by other users (group or other write bit; with
    ``sticky_ok``, a sticky folder such as /tmp passes, as others cannot rename what is in it) or
    owned by another user: anyone could put code there that erc loads."""
    st = folder.stat()
    mine = not hasattr(os, "getuid") or st.st_uid in (os.getuid(), 0)
    open_to_others = bool(st.st_mode & (stat.S_IWGRP | stat.S_IWOTH))
    if sticky_ok and st.st_mode & stat.S_ISVTX:
        open_to_others = False
    if open_to_others or not mine:
        why = "is writable by other users" if open_to_others else "belongs to another user"
        raise UserError(f"the C kernel cache {folder} {why}, so erc will not load code from it; "
                        f"`chmod go-w {folder}`, or set ERC_CACHE_DIR to a folder of your own "
                        "(or ERC_CPU_KERNELS=0 to train without the C kernels)")


def make_private(folder: Path) -> None:
    """Create ``folder`` (and missing parents) for this user only, then :func:`check_private` it and
    the folder above (where ``ERC_CACHE_DIR`` points)."""
    folder.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    folder.mkdir(mode=0o700, exist_ok=True)
    check_private(folder.parent, sticky_ok=True)
    check_private(folder)


def _digest(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def stamp_path(lib: Path) -> Path:
    return lib.with_name(lib.name + ".json")


def write_stamp(lib: Path, key: str) -> None:
    """Record beside ``lib`` the build key and the library's SHA-256 (written aside, then renamed)."""
    tmp = lib.with_name(f".{lib.name}.json.tmp")
    tmp.write_text(json.dumps({"key": key, "sha256": _digest(lib)}))
    os.replace(tmp, stamp_path(lib))


def stamp_matches(lib: Path, key: str) -> bool:
    """Whether ``lib`` exists with a stamp of this ``key`` and its bytes still hash to the stamp."""
    try:
        stamp = json.loads(stamp_path(lib).read_text())
        return isinstance(stamp, dict) and stamp.get("key") == key and stamp.get("sha256") == _digest(lib)
    except (OSError, ValueError):
        return False
