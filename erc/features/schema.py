"""The cache contract: the HDF5 layout of a feature cache, where caches live, and the two records
that cross into it from stage 1 (the utterance table and one utterance's features).

```
/                                   attrs: schema_version, dataset, manifest_hash, labels (JSON list),
                                           n_utterances, members (JSON: HDF5 path -> file, size, sha256)
/utterances/<column>                [N]   utterance_id, dialogue_id, turn, speaker, label, split, text
/features/<modality>/<encoder>/
    pooled                          [N, D]      float32, one vector per utterance (zeros if absent)
    frames                          [sum T, F]  ragged sequences in utterance order (optional)
    offsets                         [N + 1]     int64, frames of utterance i: frames[offsets[i]:offsets[i+1]]
    layers                          [N, L, D]   pooled vector of every hidden layer (optional)
    present                         [N]   bool, False where media was missing or failed
    status                          [N]   str, "ok" | "missing: why" | "failed: why"
    attrs: encoder, modality, dim, frame_dim, config (JSON), config_hash, provenance (JSON),
           library_versions (JSON), command, manifest_hash, created; frame_tokens (only where
           each step of ``frames`` is K rows, e.g. a video frame's K patch tokens: utterance i's
           rows are frame-major, ``[T_i * K, F]``; absent = 1 row a step)
```
Rows are in the corpus's utterance order (dialogues in order, turns in order).

On disk a cache is a small root file (the attributes and one HDF5 external link per group) plus one
file per group in the folder ``<cache>.groups/`` (:mod:`erc.features.layout`); ``h5py.File(cache)``
follows the links, so readers see the layout above. The root's ``members`` attribute records each
linked file's name, size and SHA-256, and every file carries the ``manifest_hash`` and
``n_utterances`` of its cache; erc reads a linked file only from beside the root and only when it
matches (:mod:`erc.features.members`). Every fixed-size dataset carries HDF5's
fletcher32 checksum (per chunk); variable-length strings carry a ``crc32`` attribute over their
contents. An extraction in progress keeps its journal in ``<cache>.parts/``
(:mod:`erc.features.journal`) and holds the lock ``<cache>.lock`` (:mod:`erc.features.lock`).

A *partial* cache (``erc extract --shard K/N``) has the root attribute ``shard = "K/N"``, the whole
utterance table, and groups holding only the part's rows: ``rows [n]`` int64 (the cache rows, in
increasing order) beside ``pooled [n, D]``, ``offsets [n + 1]`` and so on. ``erc cache merge``
joins the parts into a cache of the layout above.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

SCHEMA_VERSION = 1
UTTERANCE_COLUMNS = ("utterance_id", "dialogue_id", "turn", "speaker", "label", "split", "text")
STR_COLUMNS = ("utterance_id", "dialogue_id", "speaker", "label", "split", "text")
CACHE_DIR = Path("features")


# a per-fold encoder's group (``erc finetune --folds``): ``<name>@fold<k>``; fold k reads its own
FOLD_SUFFIX = re.compile(r"^(?P<base>.+)@fold(?P<k>\d+)$")


def fold_group_name(base: str, fold: int) -> str:
    """Cache group name of fold ``fold``'s encoder: ``roberta-ft`` -> ``roberta-ft@fold3``."""
    return f"{base}@fold{fold}"


def parse_fold_group(name: str) -> tuple[str, int | None]:
    """``"roberta-ft@fold3"`` -> ``("roberta-ft", 3)``; a name without the suffix -> ``(name, None)``."""
    m = FOLD_SUFFIX.match(name)
    return (m.group("base"), int(m.group("k"))) if m else (name, None)


def default_cache_path(dataset: str) -> Path:
    """Where ``erc extract --dataset NAME`` writes and stage 2 reads by default: ``features/NAME.h5``."""
    return CACHE_DIR / f"{dataset}.h5"


def group_path(modality: str, encoder: str) -> str:
    return f"features/{modality}/{encoder}"


def parts_dir(cache_path: Path) -> Path:
    """The journal folder of an extraction in progress into ``cache_path``."""
    return cache_path.with_name(cache_path.name + ".parts")


def members_dir(cache_path: Path) -> Path:
    """The folder of the cache's group files (one HDF5 file per group, and the utterance table)."""
    return cache_path.with_name(cache_path.name + ".groups")


def lock_path(cache_path: Path) -> Path:
    """The advisory lock a writer of ``cache_path`` holds."""
    return cache_path.with_name(cache_path.name + ".lock")


@dataclass
class Encoded:
    """One utterance's features, as an encoder produces them and the cache stores them.

    pooled: ``[D]`` one vector per utterance.
    frames: ``[T, F]`` the sequence (tokens, audio frames, video frames) or None.
    layers: ``[L, D]`` pooled vector of every hidden layer, or None.
    """

    pooled: np.ndarray
    frames: np.ndarray | None = None
    layers: np.ndarray | None = None


@dataclass(frozen=True)
class UtteranceTable:
    """The rows a cache is made for: the dataset's name, its class list (label-index order), the
    hash that identifies the table, and the ``UTTERANCE_COLUMNS`` as lists of ``n`` values."""

    dataset: str
    labels: list[str]
    manifest_hash: str
    columns: dict[str, list[Any]]

    def __len__(self) -> int:
        return len(self.columns["utterance_id"])
