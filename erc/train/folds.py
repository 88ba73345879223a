"""Split assignment: a dev set carved from train by dialogue, and k-fold cross-validation.

K-fold CV (fold ``k`` of ``K``): fold ``k`` is test, fold ``(k + 1) % K`` is dev (model
selection), the remaining ``K - 2`` folds are train. The cache's own splits are ignored.

Two groupings:

- ``"dialogue"`` (default): whole dialogues are assigned to folds, so no dialogue (and no
  context) is shared between train and test.
- ``"utterance"``: utterances are pooled and assigned to folds one by one — the protocol of
  DeepMSI-MER's 10-fold CV. Dialogues are kept whole as *inputs* (context heads still see every
  turn), but each utterance's label only counts in its own fold's split. This leaks dialogue
  context and speakers across folds (a test utterance's neighbours are trained on), so its
  numbers are not comparable with dialogue-grouped or official-split numbers.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np

from erc.errors import UserError

Grouping = Literal["dialogue", "utterance"]

LEAK_WARNING = (
    "fold grouping 'utterance' pools utterances across dialogues (DeepMSI-MER's protocol): "
    "dialogue context and speakers leak between train and test; do not compare with "
    "dialogue-grouped or official-split results"
)


@dataclass(frozen=True)
class FoldSpec:
    """Fold ``fold`` (0-based) of ``n_folds``; ``seed`` fixes the shuffle of groups."""

    n_folds: int
    fold: int
    grouping: Grouping = "dialogue"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_folds < 3:
            raise UserError(f"--folds must be at least 3 (test, dev and train folds); got {self.n_folds}")
        if not 0 <= self.fold < self.n_folds:
            raise UserError(f"fold {self.fold} is outside 0..{self.n_folds - 1}")
        if self.grouping not in ("dialogue", "utterance"):
            raise UserError(f"fold grouping must be 'dialogue' or 'utterance'; got {self.grouping!r}")


def fold_splits(dialogue_codes: np.ndarray, spec: FoldSpec) -> np.ndarray:
    """Split names for every utterance under ``spec``.

    dialogue_codes: ``[N]`` int, the dialogue index of each utterance.
    Returns ``[N]`` object array of "train" / "dev" / "test".
    """
    rng = np.random.default_rng(spec.seed)
    if spec.grouping == "utterance":
        warnings.warn(LEAK_WARNING, stacklevel=2)
        units = np.arange(len(dialogue_codes))
        unit_of = units
    else:
        units = np.unique(dialogue_codes)
        unit_of = dialogue_codes
    if len(units) < spec.n_folds:
        raise UserError(f"cannot make {spec.n_folds} folds from {len(units)} {spec.grouping}s")
    perm = rng.permutation(units)
    fold_of_unit = np.empty(int(units.max()) + 1, dtype=np.int64)
    for k, chunk in enumerate(np.array_split(perm, spec.n_folds)):
        fold_of_unit[chunk] = k
    fold = fold_of_unit[unit_of]
    out = np.full(len(dialogue_codes), "train", dtype=object)
    out[fold == spec.fold] = "test"
    out[fold == (spec.fold + 1) % spec.n_folds] = "dev"
    return out


def carve_dev(splits: np.ndarray, dialogue_codes: np.ndarray, fraction: float, seed: int = 0) -> np.ndarray:
    """When no utterance is in "dev", move ``fraction`` of the train dialogues to dev.

    The carve is by dialogue and depends only on ``seed`` (not the training seed), so every
    seed of a sweep selects on the same dev set. Returns a new ``[N]`` split array.
    """
    out = splits.copy()
    if (out == "dev").any():
        return out
    train_dialogues = np.unique(dialogue_codes[out == "train"])
    if len(train_dialogues) < 2:
        raise UserError("the cache has no dev split and too few train dialogues to carve one")
    n_dev = max(1, int(round(fraction * len(train_dialogues))))
    chosen = np.random.default_rng(seed).choice(train_dialogues, size=n_dev, replace=False)
    out[np.isin(dialogue_codes, chosen) & (out == "train")] = "dev"
    return out
