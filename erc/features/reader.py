"""Read a feature cache: utterance table, per-encoder arrays and provenance."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from erc.errors import UserError
from erc.features.schema import SCHEMA_VERSION, STR_COLUMNS, UTTERANCE_COLUMNS, group_path


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

    >>> cache = FeatureCache("features/demo.h5")
    >>> cache.pooled("text", "minilm").shape   # [N, D]
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise UserError(f"no feature cache at {self.path}; run `erc extract` first (or pass --features)")
        try:
            self._h5 = h5py.File(self.path, "r")
        except OSError as e:
            raise UserError(f"{self.path} is not a readable HDF5 feature cache ({e})") from None
        version = self._h5.attrs.get("schema_version")
        if version is None or "utterances" not in self._h5:
            raise UserError(f"{self.path} is not an erc feature cache (no schema_version / utterances)")
        if int(version) > SCHEMA_VERSION:
            raise UserError(f"{self.path} has schema {version}; this erc reads up to {SCHEMA_VERSION}")

    def close(self) -> None:
        self._h5.close()

    def __enter__(self) -> FeatureCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

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
        return int(self._h5["utterances/utterance_id"].shape[0])

    def utterances(self) -> dict[str, np.ndarray | list[str]]:
        """Column name -> values, in row order (strings as ``list[str]``, ``turn`` as int64)."""
        g = self._h5["utterances"]
        out: dict[str, Any] = {}
        for col in UTTERANCE_COLUMNS:
            if col not in g:
                continue
            arr = g[col][()]
            out[col] = _decode(arr) if col in STR_COLUMNS else np.asarray(arr)
        return out

    # ---- groups -----------------------------------------------------------------------------
    def groups(self) -> list[GroupInfo]:
        out: list[GroupInfo] = []
        feats = self._h5.get("features")
        if feats is None:
            return out
        for modality in sorted(feats):
            for encoder in sorted(feats[modality]):
                out.append(self.group(modality, encoder))
        return out

    def has(self, modality: str, encoder: str) -> bool:
        return group_path(modality, encoder) in self._h5

    def encoders(self, modality: str) -> list[str]:
        feats = self._h5.get(f"features/{modality}")
        return sorted(feats) if feats is not None else []

    def _group(self, modality: str, encoder: str) -> h5py.Group:
        path = group_path(modality, encoder)
        if path not in self._h5:
            have = ", ".join(f"{g.modality}/{g.encoder}" for g in self.groups()) or "none"
            raise UserError(f"{self.path} has no {modality} features from encoder {encoder!r} (has: {have})")
        return self._h5[path]

    def group(self, modality: str, encoder: str) -> GroupInfo:
        g = self._group(modality, encoder)
        present = g["present"][()]
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
        return np.asarray(self._group(modality, encoder)["pooled"][()], dtype=np.float32)

    def layers(self, modality: str, encoder: str) -> np.ndarray | None:
        """``[N, L, D]`` per-layer pooled vectors, or None when the group has none."""
        g = self._group(modality, encoder)
        return np.asarray(g["layers"][()], dtype=np.float32) if "layers" in g else None

    def present(self, modality: str, encoder: str) -> np.ndarray:
        """``[N]`` bool."""
        return np.asarray(self._group(modality, encoder)["present"][()], dtype=bool)

    def status(self, modality: str, encoder: str) -> list[str]:
        return _decode(self._group(modality, encoder)["status"][()])

    def frames(self, modality: str, encoder: str) -> tuple[np.ndarray, np.ndarray] | None:
        """``(frames [sum T, F], offsets [N + 1])`` or None when the encoder kept no frames."""
        g = self._group(modality, encoder)
        if "frames" not in g:
            return None
        return g["frames"][()], np.asarray(g["offsets"][()], dtype=np.int64)

    def frames_dataset(self, modality: str, encoder: str) -> tuple[h5py.Dataset, np.ndarray] | None:
        """Lazy variant of :meth:`frames`: the h5py dataset (sliced on demand) and offsets."""
        g = self._group(modality, encoder)
        if "frames" not in g:
            return None
        return g["frames"], np.asarray(g["offsets"][()], dtype=np.int64)


def _attr(value: Any) -> Any:
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value
