"""Split assignment: a dev set carved from train by dialogue, and k-fold cross-validation.

K-fold CV (fold ``k`` of ``K``): fold ``k`` is test, fold ``(k + 1) % K`` is dev (model
selection), the remaining ``K - 2`` folds are train. The cache's own splits are ignored.

Three groupings:

- ``"dialogue"`` (default): whole dialogues are assigned to folds, so no dialogue (and no
  context) is shared between train and test.
- ``"utterance"``: utterances are pooled and assigned to folds one by one — the protocol of
  DeepMSI-MER's 10-fold CV. Dialogues are kept whole as *inputs* (context heads still see every
  turn), but each utterance's label only counts in its own fold's split. This leaks dialogue
  context and speakers across folds (a test utterance's neighbours are trained on), so its
  numbers are not comparable with dialogue-grouped or official-split numbers.
- ``"session"``: leave-one-session-out, IEMOCAP's standard alternative protocol: one fold per
  recording session (``K`` = the number of sessions, 5 for IEMOCAP), fold ``k`` tests on the
  ``k``-th session (in sorted order) and trains on the others, with ``dev_fraction`` of the
  training sessions' dialogues carved out as dev (by dialogue, as :func:`carve_dev`). A dialogue's
  session is read from its id, ``Ses01F_impro01`` -> 1 (``SESSION_ID``): IEMOCAP's ids, as both the
  ``iemocap`` reader and the IEMOCAP manifest keep them.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np

from erc.errors import ErcWarning, UserError

Grouping = Literal["dialogue", "utterance", "session"]
GROUPINGS = ("dialogue", "utterance", "session")
SESSION_ID = re.compile(r"^Ses(?:sion)?0*(\d+)", re.IGNORECASE)  # Ses01F_impro01 -> 1

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
        check_grouping(self.grouping)


def check_grouping(grouping: str) -> None:
    """UserError unless ``grouping`` is one of :data:`GROUPINGS`."""
    if grouping not in GROUPINGS:
        raise UserError(f"--fold-grouping must be one of {', '.join(GROUPINGS)}; got {grouping!r}")


def parse_folds(folds: str | None, grouping: str = "dialogue") -> tuple[int | None, Grouping]:
    """``--folds`` / ``--fold-grouping`` -> (number of folds or None, grouping), checked: ``"10"`` ->
    (10, grouping); ``"session"`` -> (None, "session"): one fold per session, counted in the cache;
    None -> the cache's own splits. UserError for a count under 3 or an unknown grouping."""
    if folds is None:
        check_grouping(grouping)
        return None, grouping  # type: ignore[return-value]
    value = folds.strip().lower()
    if value in ("session", "sessions", "loso"):
        if grouping not in ("dialogue", "session"):
            raise UserError(f"--folds session is its own grouping; drop --fold-grouping {grouping}")
        return None, "session"
    try:
        n = int(value)
    except ValueError:
        raise UserError(f"--folds takes a number of folds or 'session'; got {folds!r}") from None
    FoldSpec(n, 0, grouping)  # type: ignore[arg-type]  # at least 3 folds, a known grouping
    return n, grouping  # type: ignore[return-value]


def session_of(dialogue_names: list[str] | np.ndarray) -> np.ndarray:
    """``[D]`` int: the recording session of each dialogue, read from its id (``SESSION_ID``)."""
    out = np.empty(len(dialogue_names), dtype=np.int64)
    for i, name in enumerate(dialogue_names):
        m = SESSION_ID.match(str(name))
        if m is None:
            raise UserError(f"session folds need IEMOCAP dialogue ids that start with the session "
                            f"(Ses01F_impro01); dialogue {name!r} does not")
        out[i] = int(m.group(1))
    return out


def _session_splits(dialogue_codes: np.ndarray, spec: FoldSpec, dialogue_names: list[str] | np.ndarray | None,
                    dev_fraction: float) -> np.ndarray:
    if dialogue_names is None:
        raise ValueError("session folds need the dialogue names")
    sessions = session_of(dialogue_names)
    found = sorted(set(sessions.tolist()))
    if len(found) != spec.n_folds:
        raise UserError(f"leave-one-session-out needs one fold per session: the cache has {len(found)} "
                        f"session(s) ({', '.join(map(str, found))}), not {spec.n_folds}")
    test = sessions[dialogue_codes] == found[spec.fold]
    out = np.where(test, "test", "train").astype(object)
    return carve_dev(out, dialogue_codes, dev_fraction, spec.seed)


def fold_splits(dialogue_codes: np.ndarray, spec: FoldSpec, dialogue_names: list[str] | np.ndarray | None = None,
                dev_fraction: float | None = 0.1) -> np.ndarray:
    """Split names for every utterance under ``spec``.

    dialogue_codes: ``[N]`` int, the dialogue index of each utterance; dialogue_names: ``[D]``
    the dialogue ids by code (needed by session folds, whose dev is ``dev_fraction`` of the
    training dialogues; None: 0.1). Returns ``[N]`` object array of "train" / "dev" / "test".
    """
    if spec.grouping == "session":
        return _session_splits(dialogue_codes, spec, dialogue_names, 0.1 if dev_fraction is None else dev_fraction)
    rng = np.random.default_rng(spec.seed)
    if spec.grouping == "utterance":
        warnings.warn(LEAK_WARNING, ErcWarning, stacklevel=2)
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
