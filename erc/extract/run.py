"""The extraction loop: length-sorted batches, decoding overlapped with encoding, per-utterance
failures recorded, crash-safe shards, and an atomic commit per encoder group."""

from __future__ import annotations

import collections
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from erc.config import config_hash
from erc.corpus import Corpus, Utterance
from erc.errors import MediaError, MediaMissing
from erc.extract.encoders.base import Encoded, Encoder
from erc.extract.provenance import group_attrs
from erc.features.journal import BatchResult
from erc.features.reader import FeatureCache
from erc.features.schema import UTTERANCE_COLUMNS, UtteranceTable
from erc.features.writer import CacheWriter


@dataclass
class RunConfig:
    """How to run an extraction (not what to extract).

    device: "auto" (cuda when available), "cpu" or "cuda"; fp16 is used on cuda.
    workers: threads that decode media ahead of the encoder.
    prefetch: batches decoded ahead.
    frame_dtype: on-disk dtype of frame sequences.
    force: re-extract groups that are already complete with the same config.
    overwrite: replace a cache (or partial run) that belongs to another dataset.
    """

    device: str = "auto"
    workers: int = 2
    prefetch: int = 4
    frame_dtype: str = "float16"
    force: bool = False
    overwrite: bool = False


@dataclass
class GroupSummary:
    modality: str
    encoder: str
    n: int
    ok: int = 0
    missing: int = 0
    failed: int = 0
    state: str = "extracted"
    seconds: float = 0.0
    load_seconds: float = 0.0
    resumed_batches: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)


ProgressFn = Callable[[str, int, int], None]
"""progress(description, advance_by, total): called as utterances finish."""


def resolve_device(device: str) -> str:
    import torch

    from erc.errors import UserError

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda asked for, but torch sees no CUDA GPU here; use --device cpu or auto")
    if device not in ("cpu", "cuda"):
        raise UserError(f"--device must be auto, cpu or cuda; got {device!r}")
    return device


def utterance_table(corpus: Corpus) -> UtteranceTable:
    """The rows of the cache made from ``corpus`` (what the cache's ``/utterances`` holds)."""
    return UtteranceTable(corpus.name, list(corpus.labels), corpus.manifest_hash(),
                          {col: [getattr(u, col) for u in corpus.utterances] for col in UTTERANCE_COLUMNS})


def plan_batches(encoder: Encoder, utterances: Sequence[Utterance]) -> list[list[int]]:
    """Row indices in batches of ``encoder.config.batch_size``, longest first (stable), so that
    padding inside a batch is small. Deterministic: a resumed run rebuilds the same plan."""
    keys = [encoder.sort_key(u) for u in utterances]
    order = sorted(range(len(utterances)), key=lambda i: (-keys[i], i))
    size = max(1, int(encoder.config.batch_size))
    return [order[i: i + size] for i in range(0, len(order), size)]


def dialogue_positions(corpus: Corpus) -> list[tuple[list[Utterance], int]]:
    """For each row of ``corpus.utterances``: its dialogue (in turn order) and its position there."""
    where: dict[str, tuple[list[Utterance], int]] = {}
    for utts in corpus.dialogues().values():
        for p, u in enumerate(utts):
            where[u.utterance_id] = (utts, p)
    return [where[u.utterance_id] for u in corpus.utterances]


def _prepare_batch(encoder: Encoder, corpus_rows: list[tuple[list[Utterance], int]],
                   rows: list[int]) -> tuple[list[int], list[Any], list[str]]:
    """Decode one batch on a worker thread: (rows, items or None, status per row)."""
    items: list[Any] = []
    status: list[str] = []
    for r in rows:
        dialogue, pos = corpus_rows[r]
        try:
            items.append(encoder.prepare(dialogue, pos))
            status.append("ok")
        except MediaMissing as e:
            items.append(None)
            status.append(f"missing: {e}")
        except MediaError as e:
            items.append(None)
            status.append(f"failed: {e}")
        except Exception as e:  # noqa: BLE001 - one bad file must not stop the run
            items.append(None)
            status.append(f"failed: {type(e).__name__}: {e}")
    return rows, items, status


def _encode_batch(encoder: Encoder, items: list[Any], status: list[str]) -> list[Encoded | None]:
    """Encode the ok items together; if the batch fails, retry one by one to isolate the bad one."""
    idx = [i for i, s in enumerate(status) if s == "ok"]
    out: list[Encoded | None] = [None] * len(items)
    if not idx:
        return out
    try:
        for i, enc in zip(idx, encoder.encode([items[i] for i in idx])):
            out[i] = enc
    except Exception:  # noqa: BLE001
        for i in idx:
            try:
                out[i] = encoder.encode([items[i]])[0]
            except Exception as e:  # noqa: BLE001
                status[i] = f"failed: encoder error: {type(e).__name__}: {e}"
    return out


def extract_group(corpus: Corpus, encoder: Encoder, writer: CacheWriter, cfg: RunConfig, command: str,
                  progress: ProgressFn | None = None) -> GroupSummary:
    """Extract one encoder's features for every utterance of ``corpus`` into the writer's cache."""
    t0 = time.perf_counter()
    summary = GroupSummary(encoder.modality, encoder.name, len(corpus.utterances))
    chash = config_hash({"encoder": encoder.config_dict(), "frame_dtype": cfg.frame_dtype})
    if not cfg.force and writer.is_current(encoder.modality, encoder.name, chash):
        summary.state = "up to date"
        return _fill_counts(summary, writer.path)
    corpus_rows = dialogue_positions(corpus)
    plan = plan_batches(encoder, corpus.utterances)
    store = writer.journal(encoder.modality, encoder.name)
    done = store.open(chash, plan)
    summary.resumed_batches = done
    finished = store.finished()
    todo = [b for b in range(len(plan)) if b not in finished]
    desc = f"{encoder.modality}/{encoder.name}"
    if progress:
        progress(desc, sum(len(plan[b]) for b in finished), len(corpus.utterances))
    if todo:
        t_load = time.perf_counter()
        encoder.load(cfg.device, fp16=cfg.device == "cuda")
        summary.load_seconds = time.perf_counter() - t_load
        with ThreadPoolExecutor(max_workers=max(1, cfg.workers)) as pool:
            queue: collections.deque[tuple[int, Future]] = collections.deque()
            it = iter(todo)
            for b in it:
                queue.append((b, pool.submit(_prepare_batch, encoder, corpus_rows, plan[b])))
                if len(queue) >= max(1, cfg.prefetch):
                    break
            while queue:
                b, fut = queue.popleft()
                nxt = next(it, None)
                if nxt is not None:
                    queue.append((nxt, pool.submit(_prepare_batch, encoder, corpus_rows, plan[nxt])))
                rows, items, status = fut.result()
                encoded = _encode_batch(encoder, items, status)
                store.write(b, BatchResult(rows, status, encoded))
                if progress:
                    progress(desc, len(rows), len(corpus.utterances))
    writer.commit(encoder.modality, encoder.name, group_attrs(encoder, chash, corpus, command), cfg.frame_dtype)
    summary.state = "resumed" if done else "extracted"
    summary.seconds = time.perf_counter() - t0
    return _fill_counts(summary, writer.path)


def _fill_counts(summary: GroupSummary, out: Path) -> GroupSummary:
    with FeatureCache(out) as cache:
        ids = cache.utterances()["utterance_id"]
        for uid, st in zip(ids, cache.status(summary.modality, summary.encoder)):
            if st == "ok":
                summary.ok += 1
            elif st.startswith("missing"):
                summary.missing += 1
                summary.failures.append((uid, st))
            else:
                summary.failed += 1
                summary.failures.append((uid, st))
    return summary


def extract(corpus: Corpus, encoders: list[Encoder], out: Path, cfg: RunConfig, command: str,
            progress: ProgressFn | None = None) -> list[GroupSummary]:
    """Extract every encoder in turn into ``out`` (each group committed as soon as it is done)."""
    cfg.device = resolve_device(cfg.device)
    writer = CacheWriter(out, utterance_table(corpus), overwrite=cfg.overwrite)
    for enc in encoders:
        enc.check()
    summaries = [extract_group(corpus, enc, writer, cfg, command, progress) for enc in encoders]
    writer.finish()
    return summaries
