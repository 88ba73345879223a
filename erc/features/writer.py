"""The one writer of a feature cache: :class:`CacheWriter` claims the file (and its journal) for an
utterance table, journals finished batches per encoder group, and commits each group atomically.

A commit builds the new file beside the old one (``<cache>.tmp``): root attributes, the utterance
table and every other group are copied over unchanged, the new group is assembled in row order
from the journal's shards, and the new file replaces the old with one ``os.replace``. A kill at
any moment leaves either the old file or the new one, never a file that cannot be opened; the
shards stay until the commit has landed, so re-running finishes the job.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from erc.errors import UserError
from erc.features.atomic import write_atomic
from erc.features.journal import ShardStore
from erc.features.schema import SCHEMA_VERSION, UTTERANCE_COLUMNS, UtteranceTable, group_path, parts_dir

STR = h5py.string_dtype("utf-8")


class CacheWriter:
    """Writes the groups of one cache file for one utterance table.

    Creating it refuses an ``out`` (or an unfinished journal beside it) that holds another
    dataset's cache, unless ``overwrite`` (which discards it), and records this table as the owner
    of the journal.
    """

    def __init__(self, path: Path, table: UtteranceTable, overwrite: bool = False) -> None:
        self.path, self.table = Path(path), table
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._claim(overwrite)

    def _claim(self, overwrite: bool) -> None:
        mine = self.table.manifest_hash
        if self.path.exists():
            dataset, mhash, n = _describe(self.path)
            if mhash != mine:
                if not overwrite:
                    raise UserError(
                        f"{self.path} holds a cache of dataset {dataset!r} ({n} utterances) that is not this "
                        f"{self.table.dataset!r} corpus ({len(self.table)} utterances); "
                        "pass another --out, or --overwrite to replace it")
                self.path.unlink()
        pdir = parts_dir(self.path)
        meta = pdir / "meta.json"
        if meta.exists():
            try:
                owner = json.loads(meta.read_text())
            except (OSError, ValueError):
                owner = {}
            if owner.get("manifest_hash") != mine:
                if not overwrite:
                    raise UserError(
                        f"{pdir} holds an unfinished extraction of dataset {owner.get('dataset')!r}, not of this "
                        f"{self.table.dataset!r} corpus; pass another --out, or --overwrite to discard it")
                shutil.rmtree(pdir)
        if not meta.exists():
            write_atomic(meta, json.dumps({"dataset": self.table.dataset, "manifest_hash": mine}))

    def is_current(self, modality: str, encoder: str, chash: str) -> bool:
        """True when the cache already holds this group extracted with the same config hash."""
        if not self.path.exists():
            return False
        with h5py.File(self.path, "r") as h5:
            path = group_path(modality, encoder)
            return path in h5 and str(h5[path].attrs.get("config_hash", "")) == chash

    def journal(self, modality: str, encoder: str) -> ShardStore:
        """The shard journal of one group (open it with the group's config hash and batch plan)."""
        return ShardStore(self.path, modality, encoder)

    def commit(self, modality: str, encoder: str, attrs: dict[str, Any], frame_dtype: str = "float16") -> None:
        """Write group ``features/<modality>/<encoder>`` from its journal (replacing any old group),
        then drop the journal."""
        store = self.journal(modality, encoder)
        commit_group(self.path, self.table, modality, encoder, store.read_all(), attrs, frame_dtype)
        store.remove()

    def finish(self) -> None:
        """Remove the journal folder once no group is pending in it."""
        pdir = parts_dir(self.path)
        if pdir.exists() and not any(p for p in pdir.iterdir() if p.name != "meta.json"):
            shutil.rmtree(pdir)


def _describe(path: Path) -> tuple[str, str, int]:
    """(dataset, manifest_hash, n_utterances) of an existing cache; UserError if it is none."""
    try:
        with h5py.File(path, "r") as h5:
            if "schema_version" not in h5.attrs or "utterances" not in h5:
                raise UserError(f"{path} exists and is not an erc feature cache; choose another --out")
            return (str(h5.attrs.get("dataset", "")), str(h5.attrs.get("manifest_hash", "")),
                    int(h5["utterances/utterance_id"].shape[0]))
    except OSError:
        raise UserError(f"{path} exists and is not a readable HDF5 file; choose another --out") from None


def write_root(h5: h5py.File, table: UtteranceTable) -> None:
    """Root attributes and the ``/utterances`` table."""
    h5.attrs["schema_version"] = SCHEMA_VERSION
    h5.attrs["dataset"] = table.dataset
    h5.attrs["manifest_hash"] = table.manifest_hash
    h5.attrs["labels"] = json.dumps(table.labels)
    h5.attrs["n_utterances"] = len(table)
    g = h5.create_group("utterances")
    for col in UTTERANCE_COLUMNS:
        values = table.columns[col]
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


def commit_group(cache_path: Path, table: UtteranceTable, modality: str, encoder: str,
                 shards: list[dict[str, np.ndarray]], attrs: dict[str, Any],
                 frame_dtype: str = "float16") -> None:
    """Write group ``features/<modality>/<encoder>`` (replacing any old one) into ``cache_path``."""
    n = len(table)
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
            write_root(dst, table)
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
