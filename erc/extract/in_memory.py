"""Extraction into memory: the same batches, decoding and encoding as :func:`erc.extract.run.extract`
(length-sorted batch plan, ``prepare`` on worker threads ahead of ``encode``, a failing batch
retried item by item), with the results kept as a :class:`~erc.features.memory_cache.MemoryCache`
instead of shards and a file. For conversations that are predicted once (``erc.apply``); encoders
are loaded by the caller, once, and reused across calls.
"""

from __future__ import annotations

from typing import Any

from erc.corpus import Corpus
from erc.extract.encoders.base import Encoded, Encoder
from erc.extract.provenance import group_config_hash, token_attrs
from erc.extract.run import ProgressFn, RunConfig, dialogue_positions, plan_batches, run_batches, utterance_table
from erc.features.journal import BatchResult
from erc.features.memory_cache import MemoryCache, MemoryGroup


class _ByRow:
    """Encoded batches kept in lists by cache row: the in-memory counterpart of a shard journal."""

    def __init__(self, n: int) -> None:
        self.encoded: list[Encoded | None] = [None] * n
        self.status = ["missing: not extracted"] * n

    def write(self, batch: int, result: BatchResult, frame_dtype: str = "float16") -> None:
        for r, e, s in zip(result.rows, result.encoded, result.status):
            self.encoded[r], self.status[r] = e, s


def encode_group(corpus: Corpus, encoder: Encoder, attrs: dict[str, Any], frame_dtype: str = "float16",
                 workers: int = 2, prefetch: int = 4, progress: ProgressFn | None = None) -> MemoryGroup:
    """Every utterance of ``corpus`` through the loaded ``encoder``: one :class:`MemoryGroup` whose
    ``status`` is "ok" / "missing: why" / "failed: why" per row, as in a cache file."""
    n = len(corpus.utterances)
    plan = plan_batches(encoder, corpus.utterances)
    rows = _ByRow(n)
    desc = f"{encoder.modality}/{encoder.name}"
    cfg = RunConfig(workers=workers, prefetch=prefetch, frame_dtype=frame_dtype)
    run_batches(encoder, dialogue_positions(corpus), plan, range(len(plan)), rows, cfg,
                lambda k: progress(desc, k, n) if progress else None)
    attrs = {**attrs, **token_attrs(encoder), "config_hash": group_config_hash(encoder, frame_dtype),
             "encoder": encoder.name, "modality": encoder.modality}  # as in a cache file
    return MemoryGroup.from_encoded(rows.encoded, rows.status, attrs, frame_dtype, dim=_dim(encoder))


def _dim(encoder: Encoder) -> int | None:
    try:
        return int(encoder.dim)
    except Exception:  # noqa: BLE001 - an encoder that knows its size only after a forward pass
        return None


def extract_in_memory(corpus: Corpus, encoders: list[Encoder], attrs: dict[str, dict[str, Any]] | None = None,
                      frame_dtypes: dict[str, str] | None = None, workers: int = 2,
                      progress: ProgressFn | None = None) -> MemoryCache:
    """``corpus`` through each loaded encoder, as a cache in memory. ``attrs`` / ``frame_dtypes``
    (per modality) are the group attributes and frame dtype to record, e.g. those of the cache
    a run was trained on."""
    groups = {}
    for enc in encoders:
        groups[(enc.modality, enc.name)] = encode_group(
            corpus, enc, dict((attrs or {}).get(enc.modality, {})), (frame_dtypes or {}).get(enc.modality, "float16"),
            workers, progress=progress)
    return MemoryCache(utterance_table(corpus), groups, name=f"<{corpus.name} in memory>")
