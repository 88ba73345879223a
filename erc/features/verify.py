"""Integrity checks of a feature cache: every byte read back against its checksum (HDF5's
fletcher32 per chunk, ``crc32`` on string columns), then counts, shapes, offsets, NaN/Inf and label
names. The first unreadable chunk of each dataset is reported with its rows."""

from __future__ import annotations

from typing import Any, Callable

import h5py
import numpy as np

from erc.features import members
from erc.features.groupfile import strings_crc
from erc.features.reader import FeatureCache


def _blocks(ds: h5py.Dataset) -> list[tuple[int, int]]:
    """Row ranges covering ``ds``: its chunks (so a failure names one chunk), or ~4 MiB blocks."""
    n = ds.shape[0] if ds.shape else 0
    if ds.chunks:
        step = ds.chunks[0]
    else:
        row = max(1, int(np.prod(ds.shape[1:], dtype=np.int64)) * ds.dtype.itemsize)
        step = max(1, (4 << 20) // row)
    return [(a, min(n, a + step)) for a in range(0, n, step)]


def read_all(ds: h5py.Dataset, on_block: Callable[[np.ndarray, int], None] | None = None) -> tuple[int, int] | None:
    """Read every chunk of ``ds``; the row range of the first one that cannot be read (a failed
    checksum), or None when all can. ``on_block(block, start)`` sees each block that was read."""
    if ds.shape == ():
        try:
            ds[()]
        except OSError:
            return (0, 1)
        return None
    for a, b in _blocks(ds):
        try:
            block = ds[a:b]
        except OSError:
            return (a, b)
        if on_block is not None:
            on_block(block, a)
    return None


def checksummed(ds: h5py.Dataset) -> bool:
    """Whether ``ds`` carries a checksum (fletcher32, or ``crc32`` for strings)."""
    return bool(ds.fletcher32) or "crc32" in ds.attrs or ds.size == 0


def _check_bytes(name: str, ds: h5py.Dataset, offsets: np.ndarray | None) -> tuple[str | None, bool]:
    """(problem or None, finite) for one dataset, reading all of it."""
    finite = [True]
    numeric = ds.dtype.kind == "f"

    def look(block: np.ndarray, start: int) -> None:
        if numeric and finite[0] and not np.isfinite(np.asarray(block, dtype=np.float32)).all():
            finite[0] = False

    bad = read_all(ds, look)
    if bad is not None:
        a, b = bad
        where = f"rows {a}-{b - 1}"
        if offsets is not None and len(offsets):
            first = int(np.searchsorted(offsets, a, side="right")) - 1
            last = int(np.searchsorted(offsets, b - 1, side="right")) - 1
            where = f"frame rows {a}-{b - 1} (utterance rows {max(first, 0)}-{max(last, 0)})"
        return f"{name}: {where} fail their checksum or cannot be read (damaged file)", True
    if ds.dtype.kind == "O" and "crc32" in ds.attrs:
        if strings_crc(ds[()]) != int(ds.attrs["crc32"]):
            return f"{name}: its strings fail their crc32 checksum (damaged file)", True
    return None, finite[0]


def verify_cache(cache: FeatureCache) -> list[str]:
    """Every problem found, as one line each (empty list: the cache is sound)."""
    problems: list[str] = []
    n = len(cache)
    utt = cache._objects["utterances"]
    for col in utt:
        problem, _ = _check_bytes(f"utterances/{col}", utt[col], None)
        if problem:
            problems.append(problem)
    if problems:
        return problems  # the table itself is damaged: nothing below can be trusted
    cols = cache.utterances()
    for col, values in cols.items():
        if len(values) != n:
            problems.append(f"/utterances/{col} has {len(values)} rows, expected {n}")
    ids = cols.get("utterance_id", [])
    if len(set(ids)) != len(ids):
        problems.append("/utterances/utterance_id has duplicates")
    labels = set(cache.labels)
    bad = sorted({lab for lab in cols.get("label", []) if lab not in labels})
    if bad:
        problems.append(f"labels not in the cache's label list: {', '.join(bad[:5])}")
    for path, why in sorted(cache.broken.items()):
        problems.append(f"{path.removeprefix('features/')}: {why}")
    problems += _verify_files(cache)
    for path in cache.group_paths():
        if path not in cache.broken:
            _, modality, encoder = path.split("/", 2)
            problems += _verify_group(cache, modality, encoder, n)
    return problems


def _verify_files(cache: FeatureCache) -> list[str]:
    """Each linked file against the SHA-256 the root recorded at its commit."""
    problems: list[str] = []
    seen: dict[str, str | None] = {}
    for path, fname in sorted(cache.member_files.items()):
        if fname not in seen:
            seen[fname] = members.digest_problem(members.real_root(cache.path), fname, cache.record.get(path))
        if seen[fname]:
            problems.append(f"{path.removeprefix('features/')}: {seen[fname]}")
    return problems


def unrecorded(cache: FeatureCache) -> list[str]:
    """Linked files the root holds no record of (a cache committed by an older erc)."""
    return sorted(p.removeprefix("features/") for p in cache.member_files if p not in cache.record)


def _verify_group(cache: FeatureCache, modality: str, encoder: str, n_cache: int) -> list[str]:
    name = f"{modality}/{encoder}"
    grp = cache._group(modality, encoder)
    problems: list[str] = []
    missing = [key for key in ("pooled", "present", "status") if key not in grp]
    if missing:
        return [f"{name}: missing dataset {key}" for key in missing]
    offsets = None
    damaged = False
    for key in ("offsets", "rows", "present", "status", "pooled", "layers", "frames"):
        if key not in grp:
            continue
        problem, finite = _check_bytes(f"{name}/{key}", grp[key], offsets if key == "frames" else None)
        if problem:
            problems.append(problem)
            damaged = True
        elif not finite:
            problems.append(f"{name}: {key} {'hold' if key == 'frames' else 'holds'} NaN or Inf")
        if key == "offsets" and not problem:
            offsets = np.asarray(grp["offsets"][()])
    if damaged:
        return problems
    n = int(grp["rows"].shape[0]) if "rows" in grp else n_cache
    for key in ("pooled", "present", "status", "layers"):
        if key in grp and grp[key].shape[0] != n:
            problems.append(f"{name}: {key} has {grp[key].shape[0]} rows, expected {n}")
    attrs: dict[str, Any] = dict(grp.attrs)
    dim = int(grp["pooled"].shape[1])
    if int(attrs.get("dim", dim)) != dim:
        problems.append(f"{name}: attrs say dim {attrs.get('dim')}, pooled has {dim}")
    present = np.asarray(grp["present"][()], dtype=bool)
    status = cache.status(modality, encoder)
    mismatch = sum(bool(p) != (s == "ok") for p, s in zip(present, status))
    if mismatch:
        problems.append(f"{name}: {mismatch} rows where present and status disagree")
    if "frames" in grp:
        if offsets is None or offsets.shape != (n + 1,):
            problems.append(f"{name}: offsets missing or not of length N + 1 = {n + 1}")
        else:
            if offsets[0] != 0 or np.any(np.diff(offsets) < 0):
                problems.append(f"{name}: offsets are not non-decreasing from 0")
            if offsets[-1] != grp["frames"].shape[0]:
                problems.append(f"{name}: offsets end at {offsets[-1]}, frames has {grp['frames'].shape[0]} rows")
            lens = np.diff(offsets)
            if len(lens) == len(present) and np.any(lens[~present] != 0):
                problems.append(f"{name}: absent utterances have frames")
    return problems


def unchecksummed(cache: FeatureCache) -> list[str]:
    """Datasets written without a checksum (by an erc before checksums), as ``group/key``."""
    out = []
    utt = cache._objects["utterances"]
    out += [f"utterances/{c}" for c in utt if not checksummed(utt[c])]
    for path in cache.group_paths():
        if path not in cache.broken:
            grp = cache._objects[path]
            out += [f"{path.removeprefix('features/')}/{k}" for k in grp if not checksummed(grp[k])]
    return out
