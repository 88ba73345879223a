"""What ties a cache's files together: the root records, for every linked file (the utterance
table's and one per group), its name, size and SHA-256; every file carries the manifest hash and
utterance count of the cache it was written for (file attributes ``manifest_hash`` and
``n_utterances``).

A file is found only **beside the root** (``<cache>.groups/<name>``), never through HDF5's own
search for an external link's target (which tries the current folder, too). Opening a cache checks
cheaply (existence, size, manifest hash, row counts: :func:`locate`, :func:`owner_problem`);
``erc cache verify`` adds the checksum (:func:`digest_problem`).

Caches committed before the record existed open with the cheap checks that need no record; their
next commit records the files it finds sound (:func:`complete`).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path, PurePosixPath
from typing import Any

import h5py

from erc.features.groupfile import h5_text

RECORD_ATTR = "members"


def real_root(cache: Path) -> Path:
    """The root file itself: a symlinked ``cache`` resolved to its target, so that the group files
    are written and looked for beside the target (a writer would otherwise replace the link by a
    root whose files lie beside the link)."""
    cache = Path(cache)
    return Path(os.path.realpath(cache)) if cache.is_symlink() else cache


def digest(path: Path) -> str:
    """The SHA-256 of a file's bytes, as hex."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def entry(cache: Path, fname: str) -> dict[str, Any]:
    """The record of one linked file (``fname`` relative to the root's folder)."""
    path = cache.parent / fname
    return {"file": h5_text(fname), "size": path.stat().st_size, "sha256": digest(path)}


def read_record(attrs: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """HDF5 path -> record, from the root's attributes (empty for a root written before records)."""
    raw = attrs.get(RECORD_ATTR)
    if raw is None:
        return {}
    try:
        record = json.loads(raw.decode() if isinstance(raw, bytes) else str(raw))
    except ValueError:
        return {}
    return record if isinstance(record, dict) else {}


def dump_record(record: dict[str, dict[str, Any]]) -> str:
    return json.dumps(record, sort_keys=True)


def beside(cache: Path, fname: str) -> Path | None:
    """The path of a link's target file beside the root, or None when the link's file name would
    leave the root's folder (absolute, or with ``..``)."""
    p = PurePosixPath(fname)
    if not fname or p.is_absolute() or ".." in p.parts:
        return None
    return cache.parent / fname


def locate(cache: Path, fname: str, rec: dict[str, Any] | None) -> tuple[Path | None, str | None]:
    """(the file, None) or (None, why it is not the one this root links): missing beside the root,
    another name than recorded, another size than recorded."""
    where = beside(cache, fname)
    if where is None:
        return None, f"its link points outside the cache's folder ({fname}); a cache's files lie in {cache.name}.groups/"
    if not where.is_file():
        return None, (f"its file {fname} is missing beside {cache.name} (a cache is {cache.name} together with "
                      f"its folder {cache.name}.groups/); restore the folder or re-extract the group with --force")
    if rec is not None:
        if rec.get("file") != h5_text(fname):
            return None, f"the root links {fname}, but recorded {rec.get('file')} (the root was edited or damaged)"
        size = where.stat().st_size
        if int(rec.get("size", -1)) != size:
            return None, (f"its file {fname} is {size} bytes, the root recorded {rec.get('size')}: it was replaced "
                          "or damaged after the commit; re-extract the group with --force")
    return where, None


def owner_problem(h5: h5py.File, obj: h5py.Group, fname: str, manifest: str | None, n: int | None,
                  partial: bool) -> str | None:
    """Why the file ``h5`` (holding ``obj``) does not belong to a cache of manifest hash ``manifest``
    and ``n`` utterances, or None. Files of an older erc, without the file attributes, are judged on
    the group's own ``manifest_hash`` attribute and on their row counts."""
    mine = h5.attrs.get("manifest_hash", obj.attrs.get("manifest_hash"))
    if mine is not None and manifest is not None and str(_text(mine)) != str(manifest):
        return (f"its file {fname} belongs to another cache (manifest hash {_text(mine)}, this cache's "
                f"{manifest}); copy back the cache's own file or re-extract the group with --force")
    if n is None:
        return None
    said = h5.attrs.get("n_utterances")
    if said is not None and int(said) != n:
        return f"its file {fname} was written for {int(said)} utterances, this cache has {n} utterances"
    rows = _rows(obj, partial)
    if rows is not None and not (rows <= n if partial else rows == n):
        return f"its file {fname} holds {rows} rows, this cache has {n} utterances"
    return None


def _rows(obj: h5py.Group, partial: bool) -> int | None:
    for key in (("rows",) if partial and "rows" in obj else ()) + ("pooled", "utterance_id"):
        if key in obj and obj[key].shape:
            return int(obj[key].shape[0])
    return None


def digest_problem(cache: Path, fname: str, rec: dict[str, Any] | None) -> str | None:
    """The full check of ``erc cache verify``: the file's SHA-256 against the record."""
    if rec is None or "sha256" not in rec:
        return None
    where = beside(cache, fname)
    if where is None or not where.is_file():
        return None  # already named by locate
    if digest(where) != rec["sha256"]:
        return (f"its file {fname} does not match the checksum the root recorded: it was replaced or damaged "
                "after the commit; re-extract the group with --force")
    return None


def complete(cache: Path, links: dict[str, tuple[str, str]], record: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The record for ``links``: kept where it names the same file, made (size and checksum read
    from the file beside the root) where it is missing: how a cache of an older erc is adopted."""
    out: dict[str, dict[str, Any]] = {}
    for path, (fname, _) in links.items():
        rec = record.get(path)
        if rec is not None and rec.get("file") == h5_text(fname):
            out[path] = rec
        elif fname and beside(cache, fname) is not None and (cache.parent / fname).is_file():
            out[path] = entry(cache, fname)
    return out


def _text(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value
