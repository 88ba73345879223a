"""Integrity checks of a feature cache: counts, shapes, offsets, NaN/Inf, label names."""

from __future__ import annotations

import numpy as np

from erc.features.reader import FeatureCache

CHUNK = 1 << 16


def _finite(ds) -> bool:
    """True when every value of an h5py dataset is finite (read in chunks of rows)."""
    for start in range(0, ds.shape[0], CHUNK):
        block = np.asarray(ds[start: start + CHUNK], dtype=np.float32)
        if not np.isfinite(block).all():
            return False
    return True


def verify_cache(cache: FeatureCache) -> list[str]:
    """Every problem found, as one line each (empty list: the cache is sound)."""
    problems: list[str] = []
    n = len(cache)
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
    h5 = cache._h5
    for g in cache.groups():
        name = f"{g.modality}/{g.encoder}"
        grp = h5[f"features/{name}"]
        for key in ("pooled", "present", "status"):
            if key not in grp:
                problems.append(f"{name}: missing dataset {key}")
        if any(key not in grp for key in ("pooled", "present", "status")):
            continue
        for key in ("pooled", "present", "status", "layers"):
            if key in grp and grp[key].shape[0] != n:
                problems.append(f"{name}: {key} has {grp[key].shape[0]} rows, expected {n}")
        if int(g.attrs.get("dim", g.dim)) != g.dim:
            problems.append(f"{name}: attrs say dim {g.attrs.get('dim')}, pooled has {g.dim}")
        if not _finite(grp["pooled"]):
            problems.append(f"{name}: pooled holds NaN or Inf")
        if "layers" in grp and not _finite(grp["layers"]):
            problems.append(f"{name}: layers holds NaN or Inf")
        present = grp["present"][()]
        status = cache.status(g.modality, g.encoder)
        mismatch = sum(bool(p) != (s == "ok") for p, s in zip(present, status))
        if mismatch:
            problems.append(f"{name}: {mismatch} rows where present and status disagree")
        if "frames" in grp:
            offsets = np.asarray(grp["offsets"][()]) if "offsets" in grp else None
            if offsets is None or offsets.shape != (n + 1,):
                problems.append(f"{name}: offsets missing or not of length N + 1 = {n + 1}")
            else:
                if offsets[0] != 0 or np.any(np.diff(offsets) < 0):
                    problems.append(f"{name}: offsets are not non-decreasing from 0")
                if offsets[-1] != grp["frames"].shape[0]:
                    problems.append(f"{name}: offsets end at {offsets[-1]}, frames has {grp['frames'].shape[0]} rows")
                lens = np.diff(offsets)
                if np.any(lens[~present.astype(bool)] != 0):
                    problems.append(f"{name}: absent utterances have frames")
            if not _finite(grp["frames"]):
                problems.append(f"{name}: frames hold NaN or Inf")
    return problems
