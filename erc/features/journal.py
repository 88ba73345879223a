"""The journal of an extraction in progress: one shard file per finished batch, crash-safe.

``<cache>.parts/<modality>__<encoder>/`` holds ``plan.json`` (the config hash and the batch plan)
and ``b<k>.shard`` for every finished batch ``k``. A shard is written to a temporary name, flushed
and renamed into place, so a killed run (Ctrl-C or ``kill -9``) loses at most the batches in flight
and never leaves a half-written shard that looks complete. Several processes (the ranks of a
``torchrun``) may write shards of disjoint batches into one journal at the same time.

A shard file is ``ERCSHRD1`` + a little-endian uint64 header length + a JSON header (the batch's
rows, per-row status, which rows are ok, their frame counts, and where each array lies) + the raw
arrays (C order, 64-byte aligned): ``pooled [n_ok, D]`` float32, ``layers [n_ok, L, D]`` float32,
``frames [sum T, F]`` in the cache's frame dtype. Raw arrays let the commit read any one row with
a single ``pread`` (:class:`JournalSource`), so it never holds more than a block of the group in
memory whatever the corpus size (``.npz`` members can only be read whole).
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from erc.features.atomic import write_atomic
from erc.features.schema import Encoded, parts_dir

MAGIC = b"ERCSHRD1"
FORMAT = 2  # journal format: 2 = raw .shard files (1 was one .npz per batch)
ALIGN = 64


@dataclass
class BatchResult:
    """One batch's results. ``rows`` are cache row indices; ``status`` is "ok" or
    "missing: why" / "failed: why" per row; ``encoded`` is None where the status is not ok."""

    rows: list[int]
    status: list[str]
    encoded: list[Encoded | None]


class ShardStore:
    """The shards of one encoder group."""

    def __init__(self, cache_path: Path, modality: str, encoder: str) -> None:
        self.dir = parts_dir(Path(cache_path)) / f"{modality}__{encoder.replace('/', '_')}"

    def open(self, config_hash: str, plan: list[list[int]]) -> None:
        """Start or resume: keep the shards of an earlier run with the same config hash and plan,
        discard any other (:meth:`finished` then names the batches kept). One process opens the
        journal; the others of a multi-process run only write into it."""
        meta = {"format": FORMAT, "config_hash": config_hash, "plan": plan}
        plan_file = self.dir / "plan.json"
        if plan_file.exists():
            try:
                old = json.loads(plan_file.read_text())
            except (OSError, ValueError):
                old = None
            if old != meta:
                shutil.rmtree(self.dir)
        elif self.dir.exists():
            shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        if not plan_file.exists():
            write_atomic(plan_file, json.dumps(meta))
        for stale in self.dir.glob(".*.tmp"):
            stale.unlink(missing_ok=True)

    def finished(self) -> set[int]:
        return {int(p.stem[1:]) for p in self.dir.glob("b*.shard")}

    def shard_path(self, batch: int) -> Path:
        return self.dir / f"b{batch:06d}.shard"

    def write(self, batch: int, result: BatchResult, frame_dtype: str = "float16") -> None:
        ok = [e for e in result.encoded if e is not None]
        arrays: dict[str, np.ndarray] = {}
        frame_lens = None
        if ok:
            arrays["pooled"] = np.stack([e.pooled for e in ok]).astype(np.float32)
            if ok[0].layers is not None:
                arrays["layers"] = np.stack([e.layers for e in ok]).astype(np.float32)  # type: ignore[misc]
            if ok[0].frames is not None:
                frame_lens = [int(len(e.frames)) for e in ok]  # type: ignore[arg-type]
                arrays["frames"] = np.concatenate([e.frames for e in ok]).astype(frame_dtype)  # type: ignore[misc]
        header = {"rows": [int(r) for r in result.rows], "status": list(result.status),
                  "ok": [e is not None for e in result.encoded], "frame_lens": frame_lens, "arrays": {}}
        offset = 0
        for name, a in arrays.items():
            header["arrays"][name] = {"dtype": a.dtype.str, "shape": list(a.shape), "offset": offset}
            offset += _aligned(a.nbytes)
        write_atomic(self.shard_path(batch), lambda f: _write_shard(f, header, arrays))

    def header(self, batch: int) -> dict[str, Any]:
        """The JSON header of a finished shard, with ``data_start`` (where its arrays begin)."""
        with open(self.shard_path(batch), "rb") as f:
            head = f.read(16)
            if len(head) < 16 or head[:8] != MAGIC:
                raise ValueError(f"{self.shard_path(batch)} is not an erc shard")
            (length,) = struct.unpack("<Q", head[8:])
            header = json.loads(f.read(length))
        header["data_start"] = _aligned(16 + length)
        return header

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
        parent = self.dir.parent
        if parent.exists() and not any(parent.iterdir()):
            parent.rmdir()


def _aligned(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def _write_shard(f: BinaryIO, header: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    raw = json.dumps(header).encode()
    f.write(MAGIC + struct.pack("<Q", len(raw)) + raw)
    f.write(b"\0" * (_aligned(16 + len(raw)) - 16 - len(raw)))
    for a in arrays.values():
        f.write(np.ascontiguousarray(a).data)
        f.write(b"\0" * (_aligned(a.nbytes) - a.nbytes))


class JournalSource:
    """The rows of a group as its journal holds them, in cache-row order, for
    :func:`erc.features.groupfile.write_group_file`. Only the row index (status, presence, frame
    counts and where each row lies: a few integers per row) is held in memory; arrays are read
    row by row with ``pread`` when a block of the group is written.

    rows: the cache rows the group file gets, increasing (all rows, or a ``--shard``'s rows);
    rows in no finished shard get status "missing: not extracted".
    """

    def __init__(self, store: ShardStore, n_total: int, rows: np.ndarray | None = None) -> None:
        self.store = store
        self.batches = sorted(store.finished())
        status = ["missing: not extracted"] * n_total
        present = np.zeros(n_total, dtype=bool)
        frame_len = np.zeros(n_total, dtype=np.int64)
        self._shard = np.full(n_total, -1, dtype=np.int32)
        self._pos = np.zeros(n_total, dtype=np.int64)
        self._fstart = np.zeros(n_total, dtype=np.int64)
        self._layout: list[dict[str, Any]] = []
        self.dim, self.layers_shape, self.frame_dim, self.frame_dtype = 0, None, None, "float16"
        for si, b in enumerate(self.batches):
            h = self.store.header(b)
            arrays = h["arrays"]
            self._layout.append({k: (v["offset"] + h["data_start"], np.dtype(v["dtype"]), v["shape"])
                                 for k, v in arrays.items()})
            if "pooled" in arrays and not self.dim:
                self.dim = int(arrays["pooled"]["shape"][1])
            if "layers" in arrays and self.layers_shape is None:
                self.layers_shape = tuple(arrays["layers"]["shape"][1:])
            if "frames" in arrays and self.frame_dim is None:
                self.frame_dim = int(arrays["frames"]["shape"][1])
                self.frame_dtype = np.dtype(arrays["frames"]["dtype"]).name
            k, start = 0, 0
            lens = h["frame_lens"] or []
            for r, st, ok in zip(h["rows"], h["status"], h["ok"]):
                status[r] = st
                if ok:
                    present[r] = True
                    self._shard[r], self._pos[r] = si, k
                    if lens:
                        frame_len[r], self._fstart[r] = lens[k], start
                        start += lens[k]
                    k += 1
        self.rows = np.arange(n_total, dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)
        self.n = len(self.rows)
        self.status = [status[r] for r in self.rows.tolist()]
        self.present = present[self.rows]
        self.frame_len = frame_len[self.rows] if self.frame_dim is not None else None
        self._fds: collections.OrderedDict[int, int] = collections.OrderedDict()

    # ---- row access -------------------------------------------------------------------------
    def _read(self, si: int, name: str, start: int, count: int) -> np.ndarray:
        """``count`` leading-axis items from ``start`` of array ``name`` of shard ``si``."""
        offset, dtype, shape = self._layout[si][name]
        item = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
        fd = self._fds.pop(si, None)
        if fd is None:
            fd = os.open(self.store.shard_path(self.batches[si]), os.O_RDONLY)
            if len(self._fds) >= 64:
                os.close(self._fds.popitem(last=False)[1])
        self._fds[si] = fd
        raw = os.pread(fd, count * item, offset + start * item)
        if len(raw) != count * item:
            raise OSError(f"{self.store.shard_path(self.batches[si])} is truncated")
        return np.frombuffer(raw, dtype=dtype).reshape([count, *shape[1:]])

    def pooled(self, a: int, b: int) -> np.ndarray:
        """``[b - a, D]`` float32 of output rows ``a..b-1`` (zeros where absent)."""
        out = np.zeros((b - a, self.dim), dtype=np.float32)
        for i, r in enumerate(self.rows[a:b].tolist()):
            si = int(self._shard[r])
            if si >= 0:
                out[i] = self._read(si, "pooled", int(self._pos[r]), 1)[0]
        return out

    def layers(self, a: int, b: int) -> np.ndarray:
        """``[b - a, L, D]`` float32."""
        out = np.zeros((b - a, *self.layers_shape), dtype=np.float32)  # type: ignore[misc]
        for i, r in enumerate(self.rows[a:b].tolist()):
            si = int(self._shard[r])
            if si >= 0 and "layers" in self._layout[si]:
                out[i] = self._read(si, "layers", int(self._pos[r]), 1)[0]
        return out

    def frames(self, a: int, b: int) -> np.ndarray:
        """``[sum T, F]`` the frames of output rows ``a..b-1``, concatenated in row order."""
        lens = self.frame_len[a:b]  # type: ignore[index]
        out = np.empty((int(lens.sum()), self.frame_dim), dtype=self.frame_dtype)  # type: ignore[arg-type]
        at = 0
        for r, t in zip(self.rows[a:b].tolist(), lens.tolist()):
            if t:
                out[at: at + t] = self._read(int(self._shard[r]), "frames", int(self._fstart[r]), t)
                at += t
        return out

    def close(self) -> None:
        while self._fds:
            os.close(self._fds.popitem()[1])
