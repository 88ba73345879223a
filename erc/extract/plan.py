"""The batch plan of an extraction and how it is shared: length-sorted batches, each batch's
estimated cost, and a balanced split of batches among processes (``torchrun`` ranks) or parts
(``--shard K/N``). Everything here is deterministic, so every process, and every re-run, computes
the same plan and the same split."""

from __future__ import annotations

import heapq
import itertools
from typing import Sequence

from erc.corpus import Corpus, Utterance
from erc.extract.encoders.base import Encoder


def plan_with_costs(encoder: Encoder, utterances: Sequence[Utterance]) -> tuple[list[list[int]], list[float]]:
    """Row indices in batches of ``encoder.config.batch_size``, longest first (stable), so that
    padding inside a batch is small, and each batch's estimated cost: its padded size, batch
    length x the longest item's ``sort_key`` (tokens, seconds of audio ...), or its length when the
    encoder gives no length (fixed-size inputs such as N video frames). Utterances of different
    ``batch_group`` never share a batch (each group is planned on its own, in group order)."""
    keys = [float(encoder.sort_key(u)) for u in utterances]
    groups = [int(encoder.batch_group(u)) for u in utterances]
    order = sorted(range(len(utterances)), key=lambda i: (groups[i], -keys[i], i))
    size = max(1, int(encoder.config.batch_size))
    plan = [rows[i: i + size] for _, members in itertools.groupby(order, key=lambda i: groups[i])
            for rows in [list(members)] for i in range(0, len(rows), size)]
    costs = [len(b) * (max(keys[i] for i in b) or 1.0) for b in plan]
    return plan, costs


def plan_batches(encoder: Encoder, utterances: Sequence[Utterance]) -> list[list[int]]:
    """The batches of :func:`plan_with_costs`."""
    return plan_with_costs(encoder, utterances)[0]


def split_batches(costs: Sequence[float], parts: int) -> list[list[int]]:
    """Batch indices for each of ``parts`` processes, balancing the summed cost (the costliest
    batch first, to the least loaded part; ties to the lower part). Each part's list is in plan
    order (longest first)."""
    out: list[list[int]] = [[] for _ in range(parts)]
    heap = [(0.0, p) for p in range(parts)]
    for i in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        load, p = heapq.heappop(heap)
        out[p].append(i)
        heapq.heappush(heap, (load + costs[i], p))
    return [sorted(o) for o in out]


def dialogue_positions(corpus: Corpus) -> list[tuple[list[Utterance], int]]:
    """For each row of ``corpus.utterances``: its dialogue (in turn order) and its position there."""
    where: dict[str, tuple[list[Utterance], int]] = {}
    for utts in corpus.dialogues().values():
        for p, u in enumerate(utts):
            where[u.utterance_id] = (utts, p)
    return [where[u.utterance_id] for u in corpus.utterances]
