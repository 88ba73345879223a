"""``erc cache merge``: join the partial caches of a sharded extraction (``erc extract --shard K/N``)
into one cache, after checking that they belong together: the same manifest hash, the same groups
extracted with the same config, every row in exactly one part. Streams each group in blocks of
rows, so memory holds the row index and one block whatever the corpus size."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from erc.errors import UserError
from erc.features.reader import FeatureCache
from erc.features.schema import UtteranceTable
from erc.features.writer import CacheWriter

SKIP_ATTRS = ("modality", "encoder", "dim", "frame_dim", "frame_dtype")


class PartsSource:
    """One group's rows from several partial caches, in cache-row order (a
    :class:`~erc.features.groupfile.RowSource`). Each part's rows are increasing, so the rows of a
    block ``a..b-1`` are one contiguous slice of every part."""

    def __init__(self, parts: list[FeatureCache], modality: str, encoder: str, rows: list[np.ndarray]) -> None:
        self.groups = [p._group(modality, encoder) for p in parts]
        self.parts, self.part_rows = parts, rows
        self.n = sum(len(r) for r in rows)
        self.rows = np.arange(self.n, dtype=np.int64)
        self.owner = np.full(self.n, -1, dtype=np.int32)  # part of each row
        self.status = [""] * self.n
        self.present = np.zeros(self.n, dtype=bool)
        g0 = self.groups[0]
        self.dim = int(g0["pooled"].shape[1])
        self.layers_shape = tuple(g0["layers"].shape[1:]) if "layers" in g0 else None
        self.frame_dim = int(g0["frames"].shape[1]) if "frames" in g0 else None
        self.frame_dtype = str(g0["frames"].dtype) if "frames" in g0 else str(g0.attrs.get("frame_dtype", "float16"))
        self.frame_len = np.zeros(self.n, dtype=np.int64) if self.frame_dim is not None else None
        self._offsets = []
        for k, (part, r) in enumerate(zip(parts, rows)):
            self.owner[r] = k
            for row, st in zip(r.tolist(), part.status(modality, encoder)):
                self.status[row] = st
            self.present[r] = part.present(modality, encoder)
            if self.frame_len is not None:
                got = part.frames_dataset(modality, encoder)
                offsets = got[1] if got is not None else np.zeros(len(r) + 1, dtype=np.int64)
                self.frame_len[r] = np.diff(offsets)
                self._offsets.append(offsets)

    def _slices(self, a: int, b: int) -> list[tuple[int, np.ndarray, int, int]]:
        """(part, its rows in a..b-1, first and end index into the part's arrays)."""
        out = []
        for k, r in enumerate(self.part_rows):
            i0, i1 = int(np.searchsorted(r, a)), int(np.searchsorted(r, b))
            if i1 > i0:
                out.append((k, r[i0:i1], i0, i1))
        return out

    def _gather(self, key: str, a: int, b: int, shape: tuple[int, ...]) -> np.ndarray:
        out = np.zeros((b - a, *shape), dtype=np.float32)
        for k, r, i0, i1 in self._slices(a, b):
            out[r - a] = self.parts[k]._read(self.groups[k][key], f"{key} of {self.parts[k].path}", np.s_[i0:i1])
        return out

    def pooled(self, a: int, b: int) -> np.ndarray:
        return self._gather("pooled", a, b, (self.dim,))

    def layers(self, a: int, b: int) -> np.ndarray:
        return self._gather("layers", a, b, self.layers_shape)  # type: ignore[arg-type]

    def frames(self, a: int, b: int) -> np.ndarray:
        lens = self.frame_len[a:b]  # type: ignore[index]
        starts = np.concatenate([[0], np.cumsum(lens)])
        out = np.empty((int(starts[-1]), self.frame_dim), dtype=self.frame_dtype)  # type: ignore[arg-type]
        for k, r, i0, i1 in self._slices(a, b):
            offs = self._offsets[k]
            if offs[i1] == offs[i0]:
                continue
            block = self.parts[k]._read(self.groups[k]["frames"], f"frames of {self.parts[k].path}",
                                        np.s_[int(offs[i0]): int(offs[i1])])
            for j, row in enumerate(r.tolist()):
                s, e = int(offs[i0 + j] - offs[i0]), int(offs[i0 + j + 1] - offs[i0])
                out[starts[row - a]: starts[row - a] + e - s] = block[s:e]
        return out


def _check_parts(parts: list[FeatureCache]) -> tuple[list[str], int]:
    """The groups to merge and the part count N; UserError naming the first problem."""
    first = parts[0]
    for p in parts:
        if p.shard is None:
            raise UserError(f"{p.path} is not a part of a sharded extraction (made with erc extract --shard K/N)")
    for p in parts[1:]:
        if p.attrs.get("manifest_hash") != first.attrs.get("manifest_hash"):
            raise UserError(f"{p.path} and {first.path} come from different manifests (manifest hash "
                            f"{p.attrs.get('manifest_hash')} vs {first.attrs.get('manifest_hash')})")
    counts = {p.shard.split("/")[1] for p in parts}  # type: ignore[union-attr]
    if len(counts) > 1:
        raise UserError(f"the parts were cut in different numbers of shards: {', '.join(f'{p.path} is {p.shard}' for p in parts)}")
    seen: dict[str, Path] = {}
    for p in parts:
        if p.shard in seen:
            raise UserError(f"part {p.shard} is given twice: {seen[p.shard]} and {p.path}")  # type: ignore[index]
        seen[p.shard] = p.path  # type: ignore[index]
    names = [f"{g.modality}/{g.encoder}" for g in first.groups()]
    for p in parts:
        if p.broken:
            path, why = next(iter(p.broken.items()))
            raise UserError(f"{p.path}: {path} cannot be read: {why}")
        mine = [f"{g.modality}/{g.encoder}" for g in p.groups()]
        for name in names:
            if name not in mine:
                raise UserError(f"{p.path} has no group {name}, which {first.path} has (did its extraction finish?)")
        for name in mine:
            if name not in names:
                raise UserError(f"{p.path} has a group {name}, which {first.path} lacks")
        for g in p.groups():
            h0 = first.group(g.modality, g.encoder).attrs.get("config_hash")
            if g.attrs.get("config_hash") != h0:
                raise UserError(f"{g.modality}/{g.encoder} of {p.path} was extracted with another encoder "
                                f"config than in {first.path} (config hash {g.attrs.get('config_hash')} vs {h0})")
    if not names:
        raise UserError(f"{first.path} holds no feature groups")
    return names, int(counts.pop())


def _check_rows(parts: list[FeatureCache], name: str, n: int, n_parts: int) -> list[np.ndarray]:
    modality, encoder = name.split("/", 1)
    rows = [p.rows(modality, encoder) for p in parts]
    count = np.zeros(n, dtype=np.int32)
    for p, r in zip(parts, rows):
        if len(r) and (r.min() < 0 or r.max() >= n or np.any(np.diff(r) <= 0)):
            raise UserError(f"{p.path}: {name} rows are not increasing row numbers below {n} (damaged part?)")
        count[r] += 1
    ids = parts[0].utterances()["utterance_id"]
    twice = np.flatnonzero(count > 1)
    if len(twice):
        r = int(twice[0])
        holders = [str(p.path) for p, rr in zip(parts, rows) if r in set(rr.tolist())]
        raise UserError(f"{name}: row {r} (utterance {ids[r]!r}) is in more than one part: {', '.join(holders)}")
    missing = np.flatnonzero(count == 0)
    if len(missing):
        r = int(missing[0])
        have = sorted(p.shard for p in parts)  # type: ignore[type-var]
        raise UserError(f"{name}: {len(missing)} rows are in no part, the first row {r} (utterance {ids[r]!r}); "
                        f"the parts given are {', '.join(have)} of {n_parts}")
    return rows


def merge_parts(out: Path, part_paths: list[Path], overwrite: bool = False) -> list[str]:
    """Merge the parts into the cache ``out``; returns the merged group names."""
    if not part_paths:
        raise UserError("no parts given: erc cache merge OUT.h5 PART.h5 ...")
    parts: list[FeatureCache] = []
    try:
        for p in part_paths:
            if Path(p).resolve() == Path(out).resolve():
                raise UserError(f"{out} is both the output and a part")
            parts.append(FeatureCache(p, allow_partial=True))
        names, n_parts = _check_parts(parts)
        n = len(parts[0])
        rows = {name: _check_rows(parts, name, n, n_parts) for name in names}
        cols = parts[0].utterances()
        attrs = parts[0].attrs
        table = UtteranceTable(str(attrs.get("dataset", "")), json.loads(attrs["labels"]), str(attrs["manifest_hash"]),
                               {k: list(v) for k, v in cols.items()})
        with CacheWriter(Path(out), table, overwrite=overwrite) as writer:
            for name in names:
                modality, encoder = name.split("/", 1)
                source = PartsSource(parts, modality, encoder, rows[name])
                group_attrs: dict[str, Any] = {k: v for k, v in parts[0].group(modality, encoder).attrs.items()
                                               if k not in SKIP_ATTRS}
                group_attrs["merged_from"] = [f"{p.shard}: {p.path.name}" for p in parts]
                writer.commit_source(modality, encoder, source, group_attrs)
            writer.finish()
        return names
    finally:
        for p in parts:
            p.close()
