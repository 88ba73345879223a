"""Extraction into memory: the same batches, decoding and encoding as :func:`erc.extract.run.extract`
(length-sorted batch plan, ``prepare`` on worker threads ahead of ``encode``, a failing batch
retried item by item), with the results kept as a :class:`~erc.features.memory.MemoryCache`
instead of shards and a file. For conversations that are predicted once (``erc.apply``); encoders
are loaded by the caller, once, and reused across calls.
"""

from __future__ import annotations

import collections
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from erc.config import config_hash
from erc.corpus import Corpus
from erc.extract.encoders.base import Encoded, Encoder
from erc.extract.run import ProgressFn, _encode_batch, _prepare_batch, dialogue_positions, plan_batches, utterance_table
from erc.features.memory import MemoryCache, MemoryGroup


def encode_group(corpus: Corpus, encoder: Encoder, attrs: dict[str, Any], frame_dtype: str = "float16",
                 workers: int = 2, prefetch: int = 4, progress: ProgressFn | None = None) -> MemoryGroup:
    """Every utterance of ``corpus`` through the loaded ``encoder``: one :class:`MemoryGroup` whose
    ``status`` is "ok" / "missing: why" / "failed: why" per row, as in a cache file."""
    n = len(corpus.utterances)
    rows_of = dialogue_positions(corpus)
    plan = plan_batches(encoder, corpus.utterances)
    encoded: list[Encoded | None] = [None] * n
    status = ["missing: not extracted"] * n
    desc = f"{encoder.modality}/{encoder.name}"
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        queue: collections.deque[Future] = collections.deque()
        batches = iter(plan)
        for batch in batches:
            queue.append(pool.submit(_prepare_batch, encoder, rows_of, batch))
            if len(queue) >= max(1, prefetch):
                break
        while queue:
            fut = queue.popleft()
            nxt = next(batches, None)
            if nxt is not None:
                queue.append(pool.submit(_prepare_batch, encoder, rows_of, nxt))
            rows, items, st = fut.result()
            for r, e, s in zip(rows, _encode_batch(encoder, items, st), st):
                encoded[r], status[r] = e, s
            if progress:
                progress(desc, len(rows), n)
    chash = config_hash({"encoder": encoder.config_dict(), "frame_dtype": frame_dtype})
    attrs = {**attrs, "config_hash": chash, "encoder": encoder.name, "modality": encoder.modality}
    return MemoryGroup.from_encoded(encoded, status, attrs, frame_dtype, dim=_dim(encoder))


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
