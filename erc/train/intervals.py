"""How far an ablation variant is from ``full``, with 95 % confidence intervals.

delta = test W-F1(variant) - test W-F1(full), each run scored at its best-dev epoch, averaged over
the runs paired by seed (and fold). Each interval answers a different question:

- **seeds x dialogues** (:func:`bootstrap_interval`, ``resample="seeds+dialogues"``; the default
  shown as ``95% CI``): a two-way bootstrap that draws the seeds *and* the test dialogues with
  replacement (independently: the two factors are crossed, every seed is scored on every
  dialogue), each run's W-F1 recomputed on the draw from its ``predictions.csv``. Would the
  difference hold for fresh training seeds *and* a fresh set of conversations?
- **dialogues** (``resample="dialogues"``): a paired cluster bootstrap: whole test dialogues are
  drawn with replacement (one draw shared by every run scored on that test set), the trained runs
  fixed. Would *these* trained models differ on other conversations? Dialogues, not utterances,
  are the unit because errors are correlated inside a dialogue (context heads make them so).
- **utterances** (``resample="utterances"``): the same with independent utterances; too narrow
  when errors cluster by dialogue, kept for comparison (``Comparison.utterance_ci``).
- **seeds** (:func:`paired_t_interval`): Student's t-interval of the per-seed differences,
  n - 1 degrees of freedom: training randomness on the fixed split.
- **seeds x folds** (:func:`corrected_t_interval`, k-fold and session folds): the corrected
  resampled t-test (Nadeau & Bengio 2003; Bouckaert & Frank 2004): the variance of the J
  (seed, fold) differences is inflated to ``var * (1/J + n_test/n_train)`` because folds share
  training data, so the J differences are not independent (the naive ``var / J`` is too small).

An interval that contains 0 means the data cannot tell the variant from ``full`` at 95 %.
Percentile intervals use ``numpy.percentile``; t quantiles ``scipy.stats.t``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Hashable, Literal, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

LEVEL = 0.95
RESAMPLES = 1000
NAN_CI = (math.nan, math.nan)
Resample = Literal["utterances", "dialogues", "seeds+dialogues"]


@dataclass(frozen=True)
class Comparison:
    """delta of a variant against the reference (fractions, 0..1), over ``pairs`` paired runs.

    combined_ci: seeds x dialogues bootstrap (the default shown); dialogue_ci: dialogue bootstrap,
    runs fixed; runs_ci: over runs, ``runs_method`` ``"paired t"`` (seeds on one split) or
    ``"corrected t"`` (seeds x folds, Nadeau-Bengio); utterance_ci: utterance bootstrap.
    NaNs where an interval cannot be formed (fewer than 2 pairs, no predictions).
    folds: the number of folds of k-fold / session runs, None on the cache's own split.
    """

    delta: float
    pairs: int
    combined_ci: tuple[float, float] = NAN_CI
    dialogue_ci: tuple[float, float] = NAN_CI
    runs_ci: tuple[float, float] = NAN_CI
    runs_method: str = "paired t"
    utterance_ci: tuple[float, float] = NAN_CI
    folds: int | None = None

    @staticmethod
    def contains_zero(ci: tuple[float, float]) -> bool:
        return not any(math.isnan(v) for v in ci) and ci[0] <= 0.0 <= ci[1]


@dataclass(frozen=True)
class ScoredSet:
    """One test set scored by S pairs of runs (reference, variant).

    y: ``[n]`` class index; dialogues: ``[n]`` int, the dialogue of each utterance (any ids);
    ref, var: ``[S, n]`` predicted class of each pair's runs; seeds: ``[S]`` the seed of each pair
    (pairs of one seed, e.g. its folds, are drawn together by the seeds x dialogues bootstrap).
    """

    y: np.ndarray
    dialogues: np.ndarray
    ref: np.ndarray
    var: np.ndarray
    seeds: tuple[Hashable, ...]


def paired_t_interval(diffs: Sequence[float], level: float = LEVEL) -> tuple[float, float]:
    """``(low, high)`` of the mean of ``diffs`` (one per pair): Student's t-interval; NaNs for fewer
    than 2 values; a point when every difference is the same."""
    return corrected_t_interval(diffs, 0.0, level)


def corrected_t_interval(diffs: Sequence[float], test_train_ratio: float, level: float = LEVEL) -> tuple[float, float]:
    """The corrected resampled t-interval (Nadeau & Bengio) of the mean of J differences from
    resampled train / test splits (J = folds; the seeds of a fold averaged first): standard error
    ``sqrt(var * (1/J + n_test/n_train))``, J - 1 degrees of freedom. ``test_train_ratio`` 0 gives
    the plain paired t-interval. NaNs for fewer than 2 values; a point when all are the same."""
    d = np.asarray(diffs, dtype=np.float64)
    if len(d) < 2:
        return NAN_CI
    var = float(np.var(d, ddof=1))
    if var == 0.0:
        return float(d.mean()), float(d.mean())
    scale = math.sqrt(var * (1.0 / len(d) + test_train_ratio))
    low, high = stats.t.interval(level, len(d) - 1, loc=float(d.mean()), scale=scale)
    return float(low), float(high)


def weighted_f1_weighted(weights: np.ndarray, y: np.ndarray, pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Weighted F1 under each row of utterance weights (bootstrap counts) -> ``[R]``.

    weights: ``[R, n]``; y, pred: ``[n]`` class indices. The same number as
    ``sklearn.metrics.f1_score(y, pred, average="weighted", sample_weight=w, zero_division=0)``
    per row (checked in the tests): F1_c = 2 TP_c / (support_c + predicted_c), weighted by support_c.
    """
    eye = np.eye(n_classes)
    true_1h, pred_1h = eye[y], eye[pred]  # [n, C]
    support = weights @ true_1h  # [R, C]
    predicted = weights @ pred_1h
    tp = weights @ (true_1h * (y == pred)[:, None])
    f1 = 2.0 * tp / np.maximum(support + predicted, 1e-12)
    return (f1 * support).sum(1) / np.maximum(support.sum(1), 1e-12)


def _cluster_counts(rng: np.random.Generator, codes: np.ndarray, n_clusters: int, b: int) -> np.ndarray:
    """``[b, n]`` utterance weights: how often each utterance's cluster was drawn in each of b
    draws of ``n_clusters`` clusters with replacement."""
    counts = rng.multinomial(n_clusters, np.full(n_clusters, 1.0 / n_clusters), size=b)  # [b, D]
    return counts[:, codes].astype(np.float64)


def bootstrap_interval(sets: Sequence[ScoredSet], n_classes: int, resample: Resample = "dialogues",
                       level: float = LEVEL, resamples: int = RESAMPLES, seed: int = 0,
                       batch: int = 100) -> tuple[float, float]:
    """Percentile interval of the mean paired difference W-F1(var) - W-F1(ref) over every pair of
    every test set (k-fold runs give one set per fold), under a paired bootstrap that draws
    ``"utterances"``, whole ``"dialogues"`` (cluster bootstrap) or ``"seeds+dialogues"`` (also the
    seeds, with replacement, independently of the dialogues). One draw of a test set's units is
    shared by all the pairs scored on it. NaNs without pairs."""
    rng = np.random.default_rng(seed)
    if sum(s.ref.shape[0] for s in sets) == 0:
        return NAN_CI
    all_seeds = sorted({k for s in sets for k in s.seeds}, key=str)
    seed_col = {k: i for i, k in enumerate(all_seeds)}
    coded = []
    for s in sets:
        codes = (np.arange(len(s.y)) if resample == "utterances"
                 else np.unique(np.asarray(s.dialogues).astype(str), return_inverse=True)[1])
        coded.append((s, codes, int(codes.max()) + 1 if len(codes) else 0))
    draws = []
    for start in range(0, resamples, batch):
        b = min(batch, resamples - start)
        seed_w = (rng.multinomial(len(all_seeds), np.full(len(all_seeds), 1.0 / len(all_seeds)), size=b).astype(np.float64)
                  if resample == "seeds+dialogues" else np.ones((b, len(all_seeds))))
        num, den = np.zeros(b), np.zeros(b)
        for s, codes, n_clusters in coded:
            w = _cluster_counts(rng, codes, n_clusters, b)
            for p in range(s.ref.shape[0]):
                sw = seed_w[:, seed_col[s.seeds[p]]]
                diff = weighted_f1_weighted(w, s.y, s.var[p], n_classes) - weighted_f1_weighted(w, s.y, s.ref[p], n_classes)
                num += sw * diff
                den += sw
        draws.append(num / den)
    tail = 50.0 * (1.0 - level)
    low, high = np.percentile(np.concatenate(draws), [tail, 100.0 - tail])
    return float(low), float(high)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return obj if isinstance(obj, dict) else {}


def _test_predictions(run_dir: Path) -> tuple[pd.DataFrame, list[str], int]:
    """A run's labelled test rows of ``predictions.csv`` (utterance_id as index; dialogue_id,
    label, pred), its label list (the ``p_<label>`` columns) and its number of dev + test rows."""
    df = pd.read_csv(Path(run_dir) / "predictions.csv",
                     dtype={"utterance_id": str, "dialogue_id": str, "label": str, "pred": str})
    labels = [c[2:] for c in df.columns if c.startswith("p_")]
    scored = int(df["split"].isin(["dev", "test"]).sum())
    df = df[(df["split"] == "test") & df["label"].isin(labels)]
    return df.set_index("utterance_id")[["dialogue_id", "label", "pred"]], labels, scored


def _test_wf1(run_dir: Path) -> float:
    """A run's test W-F1 from its metrics.json (NaN when it has none, e.g. a failed run)."""
    test = _read_json(Path(run_dir) / "metrics.json").get("test") or {}
    return float(test.get("weighted_f1", math.nan))


def _seed_of(run_dir: Path, key: Hashable) -> Hashable:
    """The training seed of a run (metrics.json, else config.json), else its pairing key."""
    seed = _read_json(Path(run_dir) / "metrics.json").get("seed")
    if seed is None:
        seed = (_read_json(Path(run_dir) / "config.json").get("train") or {}).get("seed")
    return key if seed is None else seed


def _folds_of(run_dir: Path) -> dict[str, Any] | None:
    return _read_json(Path(run_dir) / "config.json").get("folds") or None


def fold_test_train_ratio(run_dir: Path, n_folds: int) -> float:
    """n_test / n_train of a fold run: its labelled test and train utterances as ``metrics.json``
    records them (``n_labelled``); for a run from before that record, its test rows and the cache's
    utterances less its dev and test rows (``provenance.json``); ``1 / (K - 2)`` (test, dev and
    K - 2 train folds) when the files do not say."""
    counts = _read_json(Path(run_dir) / "metrics.json").get("n_labelled") or {}
    if isinstance(counts, dict) and int(counts.get("train") or 0) > 0 and int(counts.get("test") or 0) > 0:
        return int(counts["test"]) / int(counts["train"])
    try:
        test, _, scored = _test_predictions(run_dir)
    except (OSError, ValueError, KeyError):
        return 1.0 / max(n_folds - 2, 1)
    groups = _read_json(Path(run_dir) / "provenance.json").get("groups") or {}
    sizes = [int(g["n"]) for g in groups.values() if isinstance(g, dict) and "n" in g]
    n_train = (min(sizes) - scored) if sizes else 0
    if n_train <= 0 or not len(test):
        return 1.0 / max(n_folds - 2, 1)
    return len(test) / n_train


def compare(reference: Mapping[Hashable, Path], variant: Mapping[Hashable, Path], level: float = LEVEL,
            resamples: int = RESAMPLES, seed: int = 0) -> Comparison | None:
    """delta of ``variant``'s runs against ``reference``'s, paired by key (seed, or (seed, fold)):
    run directories holding ``metrics.json`` and ``predictions.csv`` (``config.json`` says whether
    they are fold runs). None when no key is shared."""
    paired = {k: _test_wf1(variant[k]) - _test_wf1(reference[k]) for k in reference if k in variant}
    keys = [k for k, d in paired.items() if not math.isnan(d)]
    diffs = [paired[k] for k in keys]
    if not diffs:
        return None
    folds = [f for k in keys if (f := _folds_of(reference[k])) is not None]
    n_folds = (int(folds[0].get("n_folds", 0)) or None) if folds else None
    if n_folds:
        # the seeds of one fold share its partition (fold seed 0), so they are not the independent
        # repeats the correction assumes: their differences are averaged per fold, J = K
        per_fold: dict[Any, list[float]] = {}
        for k, d in zip(keys, diffs):
            per_fold.setdefault((_folds_of(reference[k]) or {}).get("fold", k), []).append(d)
        fold_diffs = [float(np.mean(v)) for v in per_fold.values()]
        ratio = float(np.mean([fold_test_train_ratio(reference[k], n_folds) for k in keys]))
        runs_ci, method = corrected_t_interval(fold_diffs, ratio, level), "corrected t"
    else:
        runs_ci, method = paired_t_interval(diffs, level), "paired t"
    sets, n_classes = _test_sets(reference, variant, keys)
    boot = {r: (bootstrap_interval(sets, n_classes, r, level, resamples, seed) if sets else NAN_CI)
            for r in ("utterances", "dialogues", "seeds+dialogues")}
    return Comparison(float(np.mean(diffs)), len(diffs), boot["seeds+dialogues"], boot["dialogues"], runs_ci, method,
                      boot["utterances"], n_folds)


def _test_sets(reference: Mapping[Hashable, Path], variant: Mapping[Hashable, Path],
               keys: list[Hashable]) -> tuple[list[ScoredSet], int]:
    """The paired runs' test predictions grouped by test set (the same utterances); ([], 0) when
    they cannot be read or the runs disagree on the label set."""
    try:
        read = [(_test_predictions(reference[k]), _test_predictions(variant[k])) for k in keys]
    except (OSError, ValueError, KeyError):
        return [], 0
    classes = read[0][0][1]
    if any(r[1] != classes or v[1] != classes for r, v in read):
        return [], 0  # runs on different label sets: nothing to pair
    code = {c: i for i, c in enumerate(classes)}
    by_set: dict[tuple[str, ...], list[tuple[Hashable, pd.DataFrame, pd.DataFrame]]] = {}
    for k, (r, v) in zip(keys, read):
        ids = tuple(sorted(set(r[0].index) & set(v[0].index)))
        if ids:
            by_set.setdefault(ids, []).append((_seed_of(reference[k], k), r[0].loc[list(ids)], v[0].loc[list(ids)]))
    sets = []
    for pairs in by_set.values():
        first = pairs[0][1]
        sets.append(ScoredSet(first["label"].map(code).to_numpy(), first["dialogue_id"].to_numpy(),
                            np.stack([r["pred"].map(code).to_numpy() for _, r, _ in pairs]),
                            np.stack([v["pred"].map(code).to_numpy() for _, _, v in pairs]),
                            tuple(s for s, _, _ in pairs)))
    return sets, len(classes)


def format_ci(ci: tuple[float, float], scale: float = 100.0) -> str:
    """``"[-1.23, +0.45]"`` (percentage points), with a trailing ``" *"`` when it contains 0;
    ``"n/a"`` for NaNs."""
    if any(math.isnan(v) for v in ci):
        return "n/a"
    mark = " *" if Comparison.contains_zero(ci) else ""
    return f"[{ci[0] * scale:+.2f}, {ci[1] * scale:+.2f}]{mark}"


ZERO_NOTE = "* the interval contains 0: not distinguishable from `full` at 95 %"
INTERVALS_NOTE = ("95% CI: seeds and test dialogues resampled together (bootstrap); CI dialogues: test dialogues "
                  "resampled, these trained runs fixed; CI seeds: t-interval over seeds (with "
                  "k-fold or session folds: over per-fold means, Nadeau-Bengio corrected t)")
