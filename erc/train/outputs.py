"""Output locations checked before any work: a run folder, a report folder or a CSV path that cannot
be written is refused up front with one line, instead of a PermissionError after minutes of work."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from erc.errors import UserError


def _nearest_existing(path: Path) -> Path:
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return probe


def _can_write_in(folder: Path) -> str | None:
    """None when a file can be created in ``folder`` (tried for real: permissions, read-only
    mounts and ACLs all show), else the reason."""
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".erc-write-test-"):
            return None
    except OSError as e:
        return e.strerror or type(e).__name__


def check_writable_folder(path: str | Path, what: str) -> Path:
    """``path`` is a folder erc may create files in: it exists and is writable, or it does not
    exist yet and its nearest existing parent is a writable folder. ``what`` names the option in
    the error (e.g. ``"--out"``). Returns ``path``."""
    path = Path(path)
    probe = _nearest_existing(path)
    if not probe.is_dir():
        raise UserError(f"{what} {path}: {probe} is a file, not a folder")
    reason = _can_write_in(probe)
    if reason is not None:
        raise UserError(f"{what} {path}: cannot write in {probe} ({reason}); choose a writable folder")
    return path


def check_writable_file(path: str | Path, what: str) -> Path:
    """``path`` is a file erc may (over)write: its folder exists and is writable, and it is not a
    folder itself. Returns ``path``."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{what} {path} is a folder; give a file name")
    if not path.parent.is_dir():
        raise UserError(f"{what} {path}: folder {path.parent} does not exist (create it first)")
    reason = _can_write_in(path.parent)
    if reason is None and path.exists() and not os.access(path, os.W_OK):
        reason = "the file is read-only"
    if reason is not None:
        raise UserError(f"{what} {path}: cannot write in {path.parent} ({reason}); choose a writable folder")
    return path


def refuse_inputs(path: str | Path, inputs: list[Path], what: str) -> None:
    """UserError when the output ``path`` is one of the command's ``inputs`` (the same file after
    links are resolved), or a file inside an input folder: writing it would destroy what was read."""
    out = Path(path).resolve()
    for item in inputs:
        src = Path(item).resolve()
        if out == src or (src.is_dir() and src in out.parents and out.exists()):
            raise UserError(f"{what} {path} is one of this command's inputs ({item}); write the output elsewhere")
