"""Commit an encoder group into the cache file atomically.

The new file is built beside the old one (``<cache>.tmp``): root attributes, the utterance table
and every other group are copied over unchanged, the new group is assembled in row order from
the shards, and the new file replaces the old with one ``os.replace``. A kill at any moment leaves
either the old file or the new one, never a file that cannot be opened; the shards stay until the
commit has landed, so re-running finishes the job.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from erc.extract.datasets.base import Corpus
from erc.features.schema import SCHEMA_VERSION, UTTERANCE_COLUMNS, group_path

STR = h5py.string_dtype("utf-8")


def write_root(h5: h5py.File, corpus: Corpus) -> None:
    """Root attributes and the ``/utterances`` table of ``corpus``."""
    h5.attrs["schema_version"] = SCHEMA_VERSION
    h5.attrs["dataset"] = corpus.name
    h5.attrs["manifest_hash"] = corpus.manifest_hash()
    h5.attrs["labels"] = json.dumps(corpus.labels)
    h5.attrs["n_utterances"] = len(corpus.utterances)
    g = h5.create_group("utterances")
    for col in UTTERANCE_COLUMNS:
        values = [getattr(u, col) for u in corpus.utterances]
        if col == "turn":
            g.create_dataset(col, data=np.asarray(values, dtype=np.int64))
        else:
            g.create_dataset(col, data=np.asarray(values, dtype=object), dtype=STR)


def _assemble(shards: list[dict[str, np.ndarray]], n: int) -> dict[str, Any]:
    """Row-ordered pooled/present/status and frame offsets from the shards (frames stay in the
    shards; they are copied in :func:`_write_frames`)."""
    dim = next((s["pooled"].shape[1] for s in shards if "pooled" in s), None)
    status = ["missing: not extracted"] * n
    present = np.zeros(n, dtype=bool)
    pooled = np.zeros((n, dim or 0), dtype=np.float32)
    frame_len = np.zeros(n, dtype=np.int64)
    layers = None
    has_frames = any("frames" in s for s in shards)
    for s in shards:
        rows, ok = s["rows"], s["ok"]
        for r, st in zip(rows.tolist(), json.loads(str(s["status"]))):
            status[r] = st
        ok_rows = rows[ok]
        present[ok_rows] = True
        if len(ok_rows):
            pooled[ok_rows] = s["pooled"]
            if "frame_lens" in s:
                frame_len[ok_rows] = s["frame_lens"]
            if "layers" in s:
                if layers is None:
                    layers = np.zeros((n,) + s["layers"].shape[1:], dtype=np.float32)
                layers[ok_rows] = s["layers"]
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(frame_len, out=offsets[1:])
    return {"pooled": pooled, "present": present, "status": status, "offsets": offsets,
            "layers": layers, "has_frames": has_frames, "dim": dim or 0}


def _write_frames(g: h5py.Group, shards: list[dict[str, np.ndarray]], offsets: np.ndarray,
                  frame_dtype: str) -> int | None:
    frame_dim = next((s["frames"].shape[1] for s in shards if "frames" in s), None)
    if frame_dim is None:
        return None
    total = int(offsets[-1])
    ds = g.create_dataset("frames", shape=(total, frame_dim), dtype=frame_dtype,
                          chunks=(min(max(total, 1), 4096), frame_dim) if total else None)
    g.create_dataset("offsets", data=offsets)
    for s in shards:
        if "frames" not in s:
            continue
        rows = s["rows"][s["ok"]]
        start = 0
        for r, length in zip(rows.tolist(), s["frame_lens"].tolist()):
            if length:
                ds[offsets[r]: offsets[r] + length] = s["frames"][start: start + length].astype(frame_dtype)
            start += length
    return frame_dim


def commit_group(cache_path: Path, corpus: Corpus, modality: str, encoder: str,
                 shards: list[dict[str, np.ndarray]], attrs: dict[str, Any],
                 frame_dtype: str = "float16") -> None:
    """Write group ``features/<modality>/<encoder>`` (replacing any old one) into ``cache_path``."""
    n = len(corpus.utterances)
    data = _assemble(shards, n)
    tmp = cache_path.with_name(cache_path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    target = group_path(modality, encoder)
    with h5py.File(tmp, "w") as dst:
        if cache_path.exists():
            with h5py.File(cache_path, "r") as src:
                for k, v in src.attrs.items():
                    dst.attrs[k] = v
                src.copy(src["utterances"], dst, name="utterances")
                for mod in src.get("features", {}):
                    for enc in src["features"][mod]:
                        path = group_path(mod, enc)
                        if path != target:
                            dst.require_group(f"features/{mod}")
                            src.copy(src[path], dst[f"features/{mod}"], name=enc)
        else:
            write_root(dst, corpus)
        g = dst.create_group(target)
        g.create_dataset("pooled", data=data["pooled"])
        g.create_dataset("present", data=data["present"])
        g.create_dataset("status", data=np.asarray(data["status"], dtype=object), dtype=STR)
        if data["layers"] is not None:
            g.create_dataset("layers", data=data["layers"])
        frame_dim = _write_frames(g, shards, data["offsets"], frame_dtype) if data["has_frames"] else None
        g.attrs["modality"] = modality
        g.attrs["encoder"] = encoder
        g.attrs["dim"] = data["dim"]
        g.attrs["frame_dim"] = frame_dim if frame_dim is not None else -1
        g.attrs["frame_dtype"] = frame_dtype
        for k, v in attrs.items():
            g.attrs[k] = v if isinstance(v, (str, int, float, bool)) else json.dumps(v, default=str)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, cache_path)
