"""A feature cache held in memory: the same arrays and reading interface as
:class:`erc.features.reader.FeatureCache`, for conversations that are predicted and never written
to disk (``erc.apply``). Each group is assembled as :mod:`erc.features.writer` assembles a file's:
pooled vectors as float32 (zeros where absent), frames cast to the group's ``frame_dtype`` and
concatenated in row order, so stage 2 reads exactly what it would read from a cache file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from erc.errors import UserError
from erc.features.reader import GroupInfo
from erc.features.schema import Encoded, UtteranceTable


@dataclass
class MemoryGroup:
    """One encoder group: ``pooled [N, D]`` float32, ``present [N]`` bool, ``status`` (N strings),
    ``frames [sum T, F]`` + ``offsets [N + 1]`` (or None), and the group's attributes."""

    pooled: np.ndarray
    present: np.ndarray
    status: list[str]
    frames: np.ndarray | None
    offsets: np.ndarray | None
    attrs: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_encoded(cls, encoded: Sequence[Encoded | None], status: Sequence[str], attrs: dict[str, Any],
                     frame_dtype: str = "float16", dim: int | None = None) -> MemoryGroup:
        """Rows in order: an :class:`Encoded` where the utterance was encoded, None where its media was
        missing or failed (``status`` says why). ``dim`` sizes an all-absent group."""
        n = len(encoded)
        ok = [e for e in encoded if e is not None]
        d = int(ok[0].pooled.shape[-1]) if ok else int(dim or 0)
        pooled = np.zeros((n, d), dtype=np.float32)
        present = np.asarray([e is not None for e in encoded], dtype=bool)
        for i, e in enumerate(encoded):
            if e is not None:
                pooled[i] = e.pooled
        frames = offsets = None
        if ok and ok[0].frames is not None:
            lens = np.asarray([0 if e is None else len(e.frames) for e in encoded], dtype=np.int64)  # type: ignore[arg-type]
            offsets = np.zeros(n + 1, dtype=np.int64)
            np.cumsum(lens, out=offsets[1:])
            frames = np.concatenate([e.frames for e in ok]).astype(frame_dtype)  # type: ignore[misc]
        return cls(pooled, present, list(status), frames, offsets, {**attrs, "frame_dtype": frame_dtype})


class MemoryCache:
    """The read side of a cache (what stage 2 uses: labels, utterances, groups, pooled, present,
    status, frames) over an :class:`UtteranceTable` and in-memory groups."""

    def __init__(self, table: UtteranceTable, groups: dict[tuple[str, str], MemoryGroup],
                 name: str = "<in memory>") -> None:
        self.table, self._groups = table, groups
        self.path = Path(name)
        n = len(table)
        for (m, e), g in groups.items():
            if len(g.pooled) != n:
                raise ValueError(f"group {m}/{e} has {len(g.pooled)} rows for a table of {n}")

    def close(self) -> None:
        """Nothing to release (the interface of :class:`FeatureCache`)."""

    def __enter__(self) -> MemoryCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def attrs(self) -> dict[str, Any]:
        return {"dataset": self.table.dataset, "manifest_hash": self.table.manifest_hash,
                "n_utterances": len(self.table)}

    @property
    def dataset(self) -> str:
        return self.table.dataset

    @property
    def labels(self) -> list[str]:
        return list(self.table.labels)

    def __len__(self) -> int:
        return len(self.table)

    def utterances(self) -> dict[str, Any]:
        """Column name -> values in row order (``turn`` as int64, the rest as lists of str)."""
        return {col: (np.asarray(v, dtype=np.int64) if col == "turn" else [str(x) for x in v])
                for col, v in self.table.columns.items()}

    def groups(self) -> list[GroupInfo]:
        return [self.group(m, e) for m, e in sorted(self._groups)]

    def encoders(self, modality: str) -> list[str]:
        return sorted(e for m, e in self._groups if m == modality)

    def has(self, modality: str, encoder: str) -> bool:
        return (modality, encoder) in self._groups

    def _group(self, modality: str, encoder: str) -> MemoryGroup:
        if (modality, encoder) not in self._groups:
            have = ", ".join(f"{m}/{e}" for m, e in sorted(self._groups)) or "none"
            raise UserError(f"{self.path} has no {modality} features from encoder {encoder!r} (has: {have})")
        return self._groups[(modality, encoder)]

    def group(self, modality: str, encoder: str) -> GroupInfo:
        g = self._group(modality, encoder)
        return GroupInfo(modality=modality, encoder=encoder, n=len(g.pooled), dim=int(g.pooled.shape[1]),
                         frame_dim=None if g.frames is None else int(g.frames.shape[1]), n_layers=None,
                         n_present=int(g.present.sum()), attrs=dict(g.attrs))

    def pooled(self, modality: str, encoder: str) -> np.ndarray:
        """``[N, D]`` float32."""
        return self._group(modality, encoder).pooled

    def present(self, modality: str, encoder: str) -> np.ndarray:
        """``[N]`` bool."""
        return self._group(modality, encoder).present

    def status(self, modality: str, encoder: str) -> list[str]:
        return list(self._group(modality, encoder).status)

    def layers(self, modality: str, encoder: str) -> None:
        """Per-layer vectors are not kept in memory."""
        return None

    def frames(self, modality: str, encoder: str) -> tuple[np.ndarray, np.ndarray] | None:
        """``(frames [sum T, F], offsets [N + 1])`` or None."""
        g = self._group(modality, encoder)
        return None if g.frames is None or g.offsets is None else (g.frames, g.offsets)
