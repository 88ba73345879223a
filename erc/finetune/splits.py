"""Which utterances each fine-tuning trains on, selects on and must never see.

The splits are made exactly as ``erc train-head`` makes them from a cache of the same corpus (the
cache keeps the corpus's utterance order): the official split with ``dev_fraction`` of the train
dialogues carved out as dev when there is no dev (:func:`erc.train.folds.carve_dev`), or fold ``k``
of ``--folds K`` / ``--folds session`` (:func:`erc.train.folds.fold_splits`). So the encoder of
fold ``k`` never sees a label of the utterances ``train-head`` scores as fold ``k``'s test.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from erc.corpus import Corpus
from erc.errors import UserError
from erc.train.folds import FoldSpec, carve_dev, fold_splits, parse_folds, session_of


@dataclass(frozen=True)
class SplitPlan:
    """One fine-tuning's splits: ``name`` ("official" or "fold<k>", the sub-folder of a per-fold
    run), ``splits [N]`` "train" / "dev" / "test" by corpus utterance, and ``definition`` (what
    finetune.json records of it)."""

    name: str
    splits: np.ndarray
    definition: dict[str, Any]
    fold: int | None = None


def dialogue_codes(corpus: Corpus) -> tuple[np.ndarray, list[str]]:
    """``(codes [N], names [D])``: each utterance's dialogue index, in order of first appearance
    (as :class:`erc.train.dialogues.DialogueData` numbers a cache's dialogues)."""
    index: dict[str, int] = {}
    codes = np.fromiter((index.setdefault(u.dialogue_id, len(index)) for u in corpus.utterances),
                        dtype=np.int64, count=len(corpus.utterances))
    return codes, list(index)


HELD = "held"  # a cross-fit part's own train utterances: not trained on, encoded by its encoder


def check_split_choice(folds: str | None, crossfit: int | None) -> None:
    """``--folds`` and ``--crossfit`` exclude each other (one line)."""
    if folds is not None and crossfit is not None:
        raise UserError("--folds and --crossfit are two different splits; pass one of them")


def official_plan(corpus: Corpus, dev_fraction: float = 0.1, codes: np.ndarray | None = None) -> SplitPlan:
    """The official split, dev carved from train as ``erc train-head`` does when there is none
    (``codes``: :func:`dialogue_codes`, when the caller has them)."""
    codes = dialogue_codes(corpus)[0] if codes is None else codes
    given = np.asarray([u.split for u in corpus.utterances], dtype=object)
    splits = carve_dev(given, codes, dev_fraction)
    carved = not (given == "dev").any()
    return SplitPlan("official", splits, {"kind": "official", "dev_carved": carved,
                                          "dev_fraction": dev_fraction if carved else None})


def crossfit_plans(corpus: Corpus, parts: int, dev_fraction: float = 0.1, fold_seed: int = 0) -> list[SplitPlan]:
    """``parts`` plans ``part<k>`` (the official train less part ``k``'s dialogues, which become
    "held"; the same dev) then the official plan, named ``full``. The parts are a seeded shuffle
    of the train dialogues dealt round-robin, so their sizes differ by at most one dialogue."""
    if parts < 2:
        raise UserError(f"--crossfit needs at least 2 parts; got {parts}")
    codes, _ = dialogue_codes(corpus)
    official = official_plan(corpus, dev_fraction, codes)
    train = np.unique(codes[official.splits == "train"])
    if len(train) < parts:
        raise UserError(f"{corpus.name} has {len(train)} train dialogues, fewer than --crossfit {parts} parts")
    order = np.random.default_rng(fold_seed).permutation(train)
    plans = []
    for k in range(parts):
        splits = official.splits.copy()
        splits[np.isin(codes, order[k::parts]) & (splits == "train")] = HELD
        plans.append(SplitPlan(f"part{k}", splits, {**official.definition, "kind": "crossfit_part", "n_parts": parts,
                                                     "part": k, "fold_seed": fold_seed}))
    return plans + [SplitPlan("full", official.splits, official.definition)]


def plan_splits(corpus: Corpus, folds: str | None, dev_fraction: float = 0.1, fold_seed: int = 0) -> list[SplitPlan]:
    """The fine-tunings ``--folds`` asks for: one on the official split, or one per fold."""
    codes, names = dialogue_codes(corpus)
    n, grouping = parse_folds(folds)  # train-head's own reading of --folds (dialogue grouping, or session)
    if folds is None:
        return [official_plan(corpus, dev_fraction, codes)]
    if n is None:
        n = len(set(session_of(names).tolist()))
    plans = []
    for k in range(n):
        spec = FoldSpec(n, k, grouping, fold_seed)
        definition = {"kind": "fold", "n_folds": n, "fold": k, "grouping": grouping, "fold_seed": fold_seed,
                      "dev_fraction": dev_fraction}
        plans.append(SplitPlan(f"fold{k}", fold_splits(codes, spec, names, dev_fraction), definition, k))
    return plans
