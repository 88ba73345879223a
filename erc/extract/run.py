"""The extraction loop: length-sorted batches, decoding overlapped with encoding and shard writes
with both, per-utterance failures recorded, crash-safe shards, and a commit per encoder group.

One process, the ranks of ``torchrun`` (:mod:`erc.extract.dist`), and the parts of ``--shard K/N``
all run this loop: the batch plan is split by estimated cost (:mod:`erc.extract.plan`), each
process encodes its share into the group's journal, and one process commits.
"""

from __future__ import annotations

import collections
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import numpy as np

from erc.corpus import Corpus, Utterance
from erc.device import is_cuda, resolve_device
from erc.errors import MediaError, MediaMissing
from erc.extract import nonfinite
from erc.extract.dist import Ranks, device_name, from_env, rank_device
from erc.extract.encoders.base import Encoded, Encoder
from erc.extract.plan import dialogue_positions, plan_batches, plan_with_costs, split_batches
from erc.extract.provenance import group_attrs, group_config_hash
from erc.features.faults import disk_errors
from erc.features.journal import BatchResult, ShardStore
from erc.features.reader import FeatureCache
from erc.features.schema import UTTERANCE_COLUMNS, UtteranceTable
from erc.features.writer import CacheWriter

__all__ = ["RunConfig", "GroupSummary", "GroupPlan", "extract", "extract_group", "extract_group_ranks", "plan_batches",
           "dialogue_positions", "utterance_table"]


@dataclass
class RunConfig:
    """How to run an extraction (not what to extract).

    device: "auto" (cuda when available), "cpu", "cuda" or "cuda:N" (:mod:`erc.device`); fp16 is
        used on CUDA.
    workers: threads that decode media ahead of the encoder.
    prefetch: batches decoded ahead.
    frame_dtype: on-disk dtype of frame sequences.
    force: re-extract groups that are already complete with the same config.
    overwrite: replace a cache (or partial run) that belongs to another dataset.
    shard: (K, N): extract only part K of N of the batch plan into a partial cache (``erc cache
        merge`` joins the parts).
    """

    device: str = "auto"
    workers: int = 2
    prefetch: int = 4
    frame_dtype: str = "float16"
    force: bool = False
    overwrite: bool = False
    shard: tuple[int, int] | None = None


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


def utterance_table(corpus: Corpus) -> UtteranceTable:
    """The rows of the cache made from ``corpus`` (what the cache's ``/utterances`` holds)."""
    return UtteranceTable(corpus.name, list(corpus.labels), corpus.manifest_hash(),
                          {col: [getattr(u, col) for u in corpus.utterances] for col in UTTERANCE_COLUMNS})


def _prepare_batch(encoder: Encoder, corpus_rows: list[tuple[list[Utterance], int]],
                   rows: list[int]) -> tuple[list[int], list[Any], list[str]]:
    """Decode one batch on a worker thread: (rows, items or None, status per row). An item holding
    NaN / Inf is not encoded: its status is ``failed: non-finite input``."""
    items: list[Any] = []
    status: list[str] = []
    for r in rows:
        dialogue, pos = corpus_rows[r]
        try:
            item = encoder.prepare(dialogue, pos)
            bad = nonfinite.non_finite(item)
            items.append(None if bad else item)
            status.append(nonfinite.INPUT if bad else "ok")
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
    """Encode the ok items together; if the batch fails, retry one by one to isolate the bad one.
    An output holding NaN / Inf is dropped with the status ``failed: non-finite output``."""
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
    for i in idx:
        if out[i] is not None and not nonfinite.check_output(out[i]):
            out[i] = None
            status[i] = nonfinite.OUTPUT
    return out


class BatchSink(Protocol):
    """Where encoded batches go: a :class:`~erc.features.journal.ShardStore` (shards on disk) or,
    for extraction in memory, lists by cache row."""

    def write(self, batch: int, result: BatchResult, frame_dtype: str = "float16") -> None: ...


def run_batches(encoder: Encoder, corpus_rows: list[tuple[list[Utterance], int]], plan: list[list[int]],
                batches: Sequence[int], store: BatchSink, cfg: RunConfig, done: Callable[[int], None]) -> float:
    """Encode ``batches`` of ``plan`` into ``store``: worker threads decode up to ``cfg.prefetch``
    batches ahead, the encoder runs here, and one thread writes behind it (at most two batches
    wait for their write, so memory stays bounded by the batch). Returns the seconds spent in
    :meth:`Encoder.ready` (a cross-fitted group's part encoders loading on their first batch)."""
    ready_seconds = 0.0
    with ThreadPoolExecutor(max_workers=max(1, cfg.workers)) as pool, ThreadPoolExecutor(max_workers=1) as io:
        queue: collections.deque[tuple[int, Future]] = collections.deque()
        writes: collections.deque[tuple[int, Future]] = collections.deque()
        it = iter(batches)

        def submit(b: int) -> Future:
            nonlocal ready_seconds
            t0 = time.perf_counter()
            encoder.ready([corpus_rows[r][0][corpus_rows[r][1]] for r in plan[b]])  # here: its errors stop the run
            ready_seconds += time.perf_counter() - t0
            return pool.submit(_prepare_batch, encoder, corpus_rows, plan[b])

        for b in it:
            queue.append((b, submit(b)))
            if len(queue) >= max(1, cfg.prefetch):
                break
        while queue:
            b, fut = queue.popleft()
            nxt = next(it, None)
            if nxt is not None:
                queue.append((nxt, submit(nxt)))
            rows, items, status = fut.result()
            encoded = _encode_batch(encoder, items, status)
            writes.append((len(rows), io.submit(store.write, b, BatchResult(rows, status, encoded), cfg.frame_dtype)))
            while len(writes) > (1 if queue else 0):
                n, w = writes.popleft()
                w.result()
                done(n)
    return ready_seconds


@dataclass
class GroupPlan:
    """One encoder group's work: the length-sorted batch plan over the whole corpus (rows per
    batch) and its estimated costs, the batches of this extraction (all, or ``--shard K/N``'s part)
    and their rows ``[n]`` sorted, and the group's config hash."""

    encoder: Encoder
    config_hash: str
    plan: list[list[int]]
    costs: list[float]
    part: list[int]
    part_rows: np.ndarray

    @classmethod
    def make(cls, corpus: Corpus, encoder: Encoder, cfg: RunConfig) -> GroupPlan:
        plan, costs = plan_with_costs(encoder, corpus.utterances)
        part = list(range(len(plan))) if cfg.shard is None else split_batches(costs, cfg.shard[1])[cfg.shard[0] - 1]
        rows = np.sort(np.asarray([r for b in part for r in plan[b]], dtype=np.int64))
        return cls(encoder, group_config_hash(encoder, cfg.frame_dtype), plan, list(costs), part, rows)

    def rows_in(self, batches: Sequence[int]) -> int:
        return sum(len(self.plan[b]) for b in batches)


def _open_journal(writer: CacheWriter, gp: GroupPlan, cfg: RunConfig) -> list[int] | None:
    """The batches the group's journal already holds, or None when the cache holds this group
    complete with the same config (nothing to do; ``cfg.force`` redoes it)."""
    enc = gp.encoder
    if not cfg.force and writer.is_current(enc.modality, enc.name, gp.config_hash):
        return None
    store = writer.journal(enc.modality, enc.name)
    with disk_errors(writer.path):
        store.open(gp.config_hash, gp.plan)
    return sorted(store.finished())


def _encode(corpus: Corpus, gp: GroupPlan, batches: list[int], out: Path, cfg: RunConfig,
            done: Callable[[int], None], summary: GroupSummary) -> None:
    """Load the encoder and encode ``batches`` into the group's journal beside ``out``."""
    if not batches:
        return
    enc = gp.encoder
    t_load = time.perf_counter()
    enc.load(cfg.device, fp16=is_cuda(cfg.device))
    summary.load_seconds = time.perf_counter() - t_load
    store = ShardStore(out, enc.modality, enc.name)
    with disk_errors(out):
        summary.load_seconds += run_batches(enc, dialogue_positions(corpus), gp.plan, batches, store, cfg, done)


def _commit(writer: CacheWriter, gp: GroupPlan, corpus: Corpus, cfg: RunConfig, command: str,
            run_info: dict[str, Any] | None) -> None:
    """Join the group's journal into the cache (a shard's part: its rows only)."""
    attrs = group_attrs(gp.encoder, gp.config_hash, corpus, command)
    if run_info:
        attrs["extraction"] = run_info
    writer.commit(gp.encoder.modality, gp.encoder.name, attrs, rows=gp.part_rows if cfg.shard is not None else None)


def extract_group(corpus: Corpus, encoder: Encoder, writer: CacheWriter, cfg: RunConfig, command: str,
                  progress: ProgressFn | None = None, run_info: dict[str, Any] | None = None) -> GroupSummary:
    """One process: extract one encoder's features for every utterance of ``corpus`` (or of
    ``cfg.shard``'s part) into ``writer``'s cache, resuming the batches its journal holds."""
    gp = GroupPlan.make(corpus, encoder, cfg)
    summary = GroupSummary(encoder.modality, encoder.name, len(gp.part_rows))
    t0 = time.perf_counter()
    finished = _open_journal(writer, gp, cfg)
    if finished is None:
        summary.state = "up to date"
        return _fill_counts(summary, writer.path)
    done_before = set(finished) & set(gp.part)
    todo = [b for b in gp.part if b not in done_before]
    desc = f"{encoder.modality}/{encoder.name}"
    if progress:
        progress(desc, gp.rows_in(done_before), len(gp.part_rows))
    _encode(corpus, gp, todo, writer.path, cfg, lambda n: progress(desc, n, len(gp.part_rows)) if progress else None,
            summary)
    _commit(writer, gp, corpus, cfg, command, run_info)
    summary.resumed_batches = len(done_before)
    summary.state = "resumed" if done_before else "extracted"
    summary.seconds = time.perf_counter() - t0
    return _fill_counts(summary, writer.path)


def extract_group_ranks(corpus: Corpus, encoder: Encoder, writer: CacheWriter | None, cfg: RunConfig, command: str,
                        ranks: Ranks, out: Path, progress: ProgressFn | None = None,
                        run_info: dict[str, Any] | None = None) -> GroupSummary:
    """The ranks of ``torchrun``: rank 0 (which holds ``writer``; the others pass None) opens the
    journal and tells every rank what it holds; each rank encodes its cost-balanced share of the
    rest into the journal beside ``out``; after a barrier rank 0 commits. Only rank 0's summary
    carries the counts."""
    gp = GroupPlan.make(corpus, encoder, cfg)
    summary = GroupSummary(encoder.modality, encoder.name, len(gp.part_rows))
    t0 = time.perf_counter()
    finished = ranks.lead(lambda: _open_journal(writer, gp, cfg))  # type: ignore[arg-type]  # rank 0's writer
    if finished is None:
        summary.state = "up to date"
        return _fill_counts(summary, out) if ranks.leader else summary
    done_before = set(finished) & set(gp.part)
    todo = [b for b in gp.part if b not in done_before]
    mine = [todo[i] for i in split_batches([gp.costs[b] for b in todo], ranks.world)[ranks.rank]]
    desc = f"{encoder.modality}/{encoder.name} (rank 0 of {ranks.world})"
    if progress:
        progress(desc, 0, gp.rows_in(mine))
    _encode(corpus, gp, mine, out, cfg, lambda n: progress(desc, n, len(gp.part_rows)) if progress else None, summary)
    ranks.barrier()
    ranks.lead(lambda: _commit(writer, gp, corpus, cfg, command, run_info))  # type: ignore[arg-type]
    summary.resumed_batches = len(done_before)
    summary.state = "resumed" if done_before else "extracted"
    summary.seconds = time.perf_counter() - t0
    return _fill_counts(summary, out) if ranks.leader else summary


def _fill_counts(summary: GroupSummary, out: Path) -> GroupSummary:
    with FeatureCache(out, allow_partial=True) as cache:
        ids = cache.utterances()["utterance_id"]
        rows = cache.rows(summary.modality, summary.encoder)
        for r, st in zip(rows.tolist(), cache.status(summary.modality, summary.encoder)):
            if st == "ok":
                summary.ok += 1
            elif st.startswith("missing"):
                summary.missing += 1
                summary.failures.append((ids[r], st))
            else:
                summary.failed += 1
                summary.failures.append((ids[r], st))
    return summary


def extract(corpus: Corpus, encoders: list[Encoder], out: Path, cfg: RunConfig, command: str,
            progress: ProgressFn | None = None) -> list[GroupSummary]:
    """Extract every encoder in turn into ``out`` (each group committed as soon as it is done).
    Under ``torchrun`` every rank calls this with the same arguments; each encodes its share."""
    ranks = from_env()
    try:
        cfg.device = rank_device(ranks, resolve_device(cfg.device))
        shard = f"{cfg.shard[0]}/{cfg.shard[1]}" if cfg.shard else None
        run_info = {"processes": ranks.world, "devices": sorted(set(ranks.gather(device_name(cfg.device)))),
                    "shard": shard}
        table = utterance_table(corpus)
        holder: list[CacheWriter] = []
        ranks.lead(lambda: holder.append(CacheWriter(out, table, overwrite=cfg.overwrite, shard=shard)))
        writer = holder[0] if holder else None
        try:
            for enc in encoders:
                enc.check()
            if ranks.world == 1:
                assert writer is not None
                summaries = [extract_group(corpus, enc, writer, cfg, command, progress, run_info) for enc in encoders]
            else:
                summaries = [extract_group_ranks(corpus, enc, writer, cfg, command, ranks, out,
                                                 progress if ranks.leader else None, run_info) for enc in encoders]
            if writer is not None:
                writer.finish()
        finally:
            if writer is not None:
                writer.close()
        return summaries
    finally:
        ranks.close()
