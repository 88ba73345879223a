"""What stage 2 reads from a cache, declared once: :class:`FeatureSource`.

Two classes implement it: :class:`erc.features.reader.FeatureCache` (a cache file, read with its
checksums) and :class:`erc.features.memory_cache.MemoryCache` (groups just extracted in memory, for
prediction on new conversations). Training, prediction and the compatibility checks take a
``FeatureSource`` and never ask which one they hold.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from erc.features.reader import GroupInfo


@runtime_checkable
class FeatureSource(Protocol):
    """The read side of a feature cache. N = utterances, in the cache's row order."""

    path: Path

    @property
    def attrs(self) -> dict[str, Any]:
        """The root attributes (``dataset``, ``manifest_hash``, ``n_utterances``, ...)."""

    @property
    def dataset(self) -> str: ...

    @property
    def labels(self) -> list[str]:
        """The class names, in label-index order (empty for an unlabelled cache)."""

    def __len__(self) -> int: ...

    def utterances(self) -> dict[str, Any]:
        """Column name -> ``[N]`` values (``turn`` int64; utterance_id, dialogue_id, speaker, label,
        split, ... as str)."""

    def groups(self) -> list[GroupInfo]: ...

    def encoders(self, modality: str) -> list[str]:
        """The encoder groups held for ``modality`` (first = the default)."""

    def has(self, modality: str, encoder: str) -> bool: ...

    def group(self, modality: str, encoder: str) -> GroupInfo:
        """One group's sizes and attributes; UserError when the cache has no such group."""

    def pooled(self, modality: str, encoder: str) -> np.ndarray:
        """``[N, D]`` float32 utterance vectors (zeros where absent)."""

    def present(self, modality: str, encoder: str) -> np.ndarray:
        """``[N]`` bool: the utterance has this modality's features."""

    def status(self, modality: str, encoder: str) -> list[str]:
        """``[N]`` extraction status per utterance (``ok``, ``missing: ...``, ``failed: ...``)."""

    def frames(self, modality: str, encoder: str) -> tuple[np.ndarray, np.ndarray] | None:
        """``(frames [sum T, F], offsets [N + 1])``, or None when the group kept no frames."""

    def close(self) -> None: ...
