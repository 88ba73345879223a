"""Read a feature cache: utterance table, per-encoder arrays and provenance.

Every read goes through :meth:`FeatureCache._read`, which turns a failed checksum (HDF5's
fletcher32 on every chunk, a ``crc32`` on string columns) or a damaged file into one
:class:`~erc.errors.UserError` naming the cache, the group and the rows, so that stage 2 never
trains on garbage.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from erc.errors import UserError
from erc.features import members
from erc.features.groupfile import strings_crc
from erc.features.schema import SCHEMA_VERSION, STR_COLUMNS, UTTERANCE_COLUMNS, group_path


class CacheCorrupt(UserError):
    """A dataset of the cache fails its checksum or cannot be read."""


@dataclass
class GroupInfo:
    """What one ``/features/<modality>/<encoder>`` group holds."""

    modality: str
    encoder: str
    n: int
    dim: int
    frame_dim: int | None
    n_layers: int | None
    n_present: int
    attrs: dict[str, Any]

    @property
    def frame_tokens(self) -> int:
        """Rows of ``frames`` per step (the ``frame_tokens`` attribute; 1 when absent)."""
        return int(self.attrs.get("frame_tokens", 1))


def _decode(arr: np.ndarray) -> list[str]:
    return [x.decode() if isinstance(x, bytes) else str(x) for x in arr]


class FeatureCache:
    """A read-only view of a cache file. Arrays are read whole on request (caches of pooled
    vectors are small; frames can be large, so they are read only when asked for).

    The group files a cache links to are opened once, when the cache is opened, so a writer that
    replaces a group meanwhile does not pull it from under this reader.

    >>> cache = FeatureCache("features/demo.h5")
    >>> cache.pooled("text", "minilm").shape   # [N, D]

    allow_partial: open a part of a ``--shard`` extraction (groups then hold a ``rows`` subset).
    """

    def __init__(self, path: str | Path, allow_partial: bool = False) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise UserError(f"no feature cache at {self.path}; run `erc extract` first (or pass --features)")
        try:
            self._h5 = h5py.File(self.path, "r")
        except OSError as e:
            raise UserError(f"{self.path} is not a readable HDF5 feature cache ({e})") from None
        try:
            self._open(allow_partial)
        except BaseException:
            for f in getattr(self, "_files", {}).values():
                f.close()
            self._h5.close()
            raise

    def _open(self, allow_partial: bool) -> None:
        attrs = self._h5.attrs
        version = attrs.get("schema_version")
        self.broken: dict[str, str] = {}
        self._objects: dict[str, Any] = {}
        self._files: dict[str, h5py.File] = {}
        self.record = members.read_record(dict(attrs))
        self.member_files: dict[str, str] = {}  # HDF5 path -> its file, relative to the root's folder
        if version is None:
            raise UserError(f"{self.path} is not an erc feature cache (no schema_version)")
        shard = attrs.get("shard")
        self.shard = str(shard) if shard is not None else None
        manifest = _attr(attrs.get("manifest_hash"))
        said = attrs.get("n_utterances")
        self._pin("utterances", manifest, int(said) if said is not None else None)
        if "utterances" not in self._objects:
            why = self.broken.get("utterances", "no /utterances")
            raise UserError(f"{self.path} is not a usable erc feature cache: its utterance table: {why}")
        if said is not None and int(said) != len(self):
            raise UserError(f"{self.path}: the root says {int(said)} utterances, its utterance table holds "
                            f"{len(self)}: the cache's files do not belong together; re-extract it")
        if int(version) > SCHEMA_VERSION:
            raise UserError(f"{self.path} has schema {version}; this erc reads up to {SCHEMA_VERSION}")
        if self.shard and not allow_partial:
            raise UserError(f"{self.path} is part {self.shard} of a sharded extraction (erc extract --shard); "
                            "join all the parts first: erc cache merge OUT.h5 PART.h5 ...")
        feats = self._h5.get("features")
        for modality in sorted(feats) if feats is not None else []:
            for encoder in sorted(feats[modality]):
                self._pin(group_path(modality, encoder), manifest, len(self))

    def _pin(self, path: str, manifest: str | None, n: int | None) -> None:
        """Open ``path`` and keep it open, or record in ``broken`` why not. A linked file is opened
        from beside the root only (never found through HDF5's search of the current folder), after
        the cheap checks that it is the file the root recorded, of this cache
        (:mod:`erc.features.members`)."""
        link = self._h5.get(path, getlink=True)
        if link is None:
            return
        if not isinstance(link, h5py.ExternalLink):  # a single-file cache of an older erc
            try:
                self._objects[path] = self._h5[path]
            except (KeyError, OSError) as e:
                self.broken[path] = f"cannot be opened ({e})"
            return
        fname = link.filename
        where, why = members.locate(members.real_root(self.path), fname, self.record.get(path))
        if why is None and where is not None:
            try:
                if fname not in self._files:
                    self._files[fname] = h5py.File(where, "r")
                obj = self._files[fname][link.path]
                why = members.owner_problem(self._files[fname], obj, fname, manifest, n, self.shard is not None)
            except (KeyError, OSError) as e:
                why = f"its file {fname} cannot be opened ({e})"
        if why is not None:
            self.broken[path] = why
            return
        self._objects[path] = obj
        self.member_files[path] = fname

    def close(self) -> None:
        self._objects.clear()
        for f in self._files.values():
            f.close()
        self._files.clear()
        self._h5.close()

    def __enter__(self) -> FeatureCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- reading, checked -------------------------------------------------------------------
    def _read(self, ds: h5py.Dataset, what: str, sel: Any = ()) -> np.ndarray:
        """``ds[sel]``, or :class:`CacheCorrupt` naming ``what`` when a chunk fails its checksum."""
        try:
            data = ds[sel]
        except OSError as e:
            raise CacheCorrupt(f"{self.path}: {what} cannot be read ({e}); the file is damaged: run "
                               f"`erc cache verify {self.path}` for the rows, then re-extract the group "
                               "with `erc extract ... --force`") from None
        crc = ds.attrs.get("crc32") if ds.dtype.kind == "O" else None
        if crc is not None and sel == () and strings_crc(data) != int(crc):
            raise CacheCorrupt(f"{self.path}: {what} fails its checksum (crc32); the file is damaged: run "
                               f"`erc cache verify {self.path}`, then re-extract the group with `erc extract ... --force`")
        return data

    # ---- file-level -------------------------------------------------------------------------
    @property
    def attrs(self) -> dict[str, Any]:
        return {k: _attr(v) for k, v in self._h5.attrs.items()}

    @property
    def dataset(self) -> str:
        return str(self.attrs.get("dataset", ""))

    @property
    def labels(self) -> list[str]:
        return json.loads(self._h5.attrs["labels"])

    def __len__(self) -> int:
        return int(self._objects["utterances"]["utterance_id"].shape[0])

    def utterances(self) -> dict[str, np.ndarray | list[str]]:
        """Column name -> values, in row order (strings as ``list[str]``, ``turn`` as int64)."""
        g = self._objects["utterances"]
        out: dict[str, Any] = {}
        for col in UTTERANCE_COLUMNS:
            if col not in g:
                continue
            arr = self._read(g[col], f"utterances/{col}")
            out[col] = _decode(arr) if col in STR_COLUMNS else np.asarray(arr)
        return out

    # ---- groups -----------------------------------------------------------------------------
    def group_paths(self) -> list[str]:
        """Every ``features/<m>/<e>`` path, readable or not (see ``broken``)."""
        return sorted(p for p in (*self._objects, *self.broken) if p.startswith("features/"))

    def groups(self) -> list[GroupInfo]:
        out = []
        for path in self.group_paths():
            if path in self._objects:
                _, modality, encoder = path.split("/", 2)
                out.append(self.group(modality, encoder))
        return out

    def has(self, modality: str, encoder: str) -> bool:
        return group_path(modality, encoder) in self._objects

    def encoders(self, modality: str) -> list[str]:
        """The encoder groups of ``modality``, readable or not (reading a broken one says why)."""
        prefix = f"features/{modality}/"
        return sorted(p[len(prefix):] for p in self.group_paths() if p.startswith(prefix))

    def _group(self, modality: str, encoder: str) -> h5py.Group:
        path = group_path(modality, encoder)
        if path in self.broken:
            raise UserError(f"{self.path}: group {modality}/{encoder} cannot be read: {self.broken[path]}")
        if path not in self._objects:
            have = ", ".join(f"{g.modality}/{g.encoder}" for g in self.groups()) or "none"
            raise UserError(f"{self.path} has no {modality} features from encoder {encoder!r} (has: {have})")
        return self._objects[path]

    def group(self, modality: str, encoder: str) -> GroupInfo:
        g = self._group(modality, encoder)
        present = self._read(g["present"], f"{modality}/{encoder}/present")
        return GroupInfo(
            modality=modality,
            encoder=encoder,
            n=int(g["pooled"].shape[0]),
            dim=int(g["pooled"].shape[1]),
            frame_dim=int(g["frames"].shape[1]) if "frames" in g else None,
            n_layers=int(g["layers"].shape[1]) if "layers" in g else None,
            n_present=int(present.sum()),
            attrs={k: _attr(v) for k, v in g.attrs.items()},
        )

    def pooled(self, modality: str, encoder: str) -> np.ndarray:
        """``[N, D]`` float32 pooled vectors (zeros where not present)."""
        g = self._group(modality, encoder)
        return np.asarray(self._read(g["pooled"], f"{modality}/{encoder}/pooled"), dtype=np.float32)

    def layers(self, modality: str, encoder: str) -> np.ndarray | None:
        """``[N, L, D]`` per-layer pooled vectors, or None when the group has none."""
        g = self._group(modality, encoder)
        if "layers" not in g:
            return None
        return np.asarray(self._read(g["layers"], f"{modality}/{encoder}/layers"), dtype=np.float32)

    def present(self, modality: str, encoder: str) -> np.ndarray:
        """``[N]`` bool."""
        g = self._group(modality, encoder)
        return np.asarray(self._read(g["present"], f"{modality}/{encoder}/present"), dtype=bool)

    def status(self, modality: str, encoder: str) -> list[str]:
        return _decode(self._read(self._group(modality, encoder)["status"], f"{modality}/{encoder}/status"))

    def rows(self, modality: str, encoder: str) -> np.ndarray:
        """``[n]`` int64 the cache rows a group holds: all of them, or a partial cache's part."""
        g = self._group(modality, encoder)
        if "rows" in g:
            return np.asarray(self._read(g["rows"], f"{modality}/{encoder}/rows"), dtype=np.int64)
        return np.arange(g["pooled"].shape[0], dtype=np.int64)

    def frames(self, modality: str, encoder: str) -> tuple[np.ndarray, np.ndarray] | None:
        """``(frames [sum T, F], offsets [N + 1])`` or None when the encoder kept no frames."""
        g = self._group(modality, encoder)
        if "frames" not in g:
            return None
        return (self._read(g["frames"], f"{modality}/{encoder}/frames"),
                np.asarray(self._read(g["offsets"], f"{modality}/{encoder}/offsets"), dtype=np.int64))

    def frames_dataset(self, modality: str, encoder: str) -> tuple[h5py.Dataset, np.ndarray] | None:
        """Lazy variant of :meth:`frames`: the h5py dataset (sliced on demand) and offsets."""
        g = self._group(modality, encoder)
        if "frames" not in g:
            return None
        return g["frames"], np.asarray(self._read(g["offsets"], f"{modality}/{encoder}/offsets"), dtype=np.int64)


def _attr(value: Any) -> Any:
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value
