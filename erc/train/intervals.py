"""How far an ablation variant is from ``full``, with 95 % confidence intervals.

Δ = test W-F1(variant) − test W-F1(full), each run scored at its best-dev epoch. Two intervals:

- **over seeds** (:func:`paired_t_interval`): the runs of both are paired by seed (and fold);
  Student's t-interval of the per-pair differences (``scipy.stats.t``, ``scipy.stats.sem``,
  n − 1 degrees of freedom). It measures training randomness; it needs at least 2 pairs.
- **over test utterances** (:func:`bootstrap_interval`): a paired bootstrap. The test utterances
  are drawn with replacement (one draw shared by every run that has the same test set), each
  run's W-F1 is recomputed on the draw from its ``predictions.csv``, the per-pair differences are
  averaged; the interval is the 2.5 / 97.5 percentiles (``numpy.percentile``) of the draws. It
  measures the test sample's finiteness.

An interval that contains 0 means the data cannot tell the variant from ``full`` at 95 %.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Hashable, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

LEVEL = 0.95
RESAMPLES = 1000


@dataclass(frozen=True)
class Comparison:
    """Δ of a variant against the reference (fractions, 0..1), over ``pairs`` paired runs."""

    delta: float
    seeds_ci: tuple[float, float]  # NaNs with fewer than 2 pairs
    boot_ci: tuple[float, float]  # NaNs without predictions
    pairs: int

    @staticmethod
    def contains_zero(ci: tuple[float, float]) -> bool:
        return not any(math.isnan(v) for v in ci) and ci[0] <= 0.0 <= ci[1]


def paired_t_interval(diffs: Sequence[float], level: float = LEVEL) -> tuple[float, float]:
    """``(low, high)`` of the mean of ``diffs`` (one per pair): Student's t-interval; NaNs for fewer
    than 2 values; a point when every difference is the same."""
    d = np.asarray(diffs, dtype=np.float64)
    if len(d) < 2:
        return math.nan, math.nan
    sem = float(stats.sem(d))
    if sem == 0.0:
        return float(d.mean()), float(d.mean())
    low, high = stats.t.interval(level, len(d) - 1, loc=float(d.mean()), scale=sem)
    return float(low), float(high)


def weighted_f1_rows(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Weighted F1 of each row of ``y_true``, ``y_pred`` ``[R, n]`` (class indices) -> ``[R]``.

    The same number as ``sklearn.metrics.f1_score(average="weighted", zero_division=0)`` per row
    (checked in the tests): F1_c = 2 TP_c / (support_c + predicted_c), weighted by support_c.
    """
    R = y_true.shape[0]
    offset = (np.arange(R) * n_classes)[:, None]
    size = R * n_classes
    true_ids, pred_ids = offset + y_true, offset + y_pred
    tp = np.bincount(true_ids[y_true == y_pred], minlength=size).reshape(R, n_classes)
    support = np.bincount(true_ids.ravel(), minlength=size).reshape(R, n_classes)
    predicted = np.bincount(pred_ids.ravel(), minlength=size).reshape(R, n_classes)
    f1 = 2.0 * tp / np.maximum(support + predicted, 1)
    return (f1 * support).sum(1) / np.maximum(support.sum(1), 1)


def bootstrap_interval(groups: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], n_classes: int,
                       level: float = LEVEL, resamples: int = RESAMPLES, seed: int = 0,
                       batch: int = 100) -> tuple[float, float]:
    """Percentile interval of the mean paired difference under a bootstrap of test utterances.

    groups: one ``(y_true [n], ref_pred [S, n], var_pred [S, n])`` per test set (S pairs of runs
    scored on the same n utterances; k-fold runs give one group per fold). Each draw resamples
    every group's utterances with replacement, shared by its S pairs; the statistic is the mean
    over all pairs of W-F1(var) − W-F1(ref).
    """
    rng = np.random.default_rng(seed)
    total_pairs = sum(g[1].shape[0] for g in groups)
    if total_pairs == 0:
        return math.nan, math.nan
    draws = []
    for start in range(0, resamples, batch):
        b = min(batch, resamples - start)
        acc = np.zeros(b)
        for y, ref, var in groups:
            idx = rng.integers(0, len(y), size=(b, len(y)))
            y_b = y[idx]
            for s in range(ref.shape[0]):
                acc += weighted_f1_rows(y_b, var[s][idx], n_classes) - weighted_f1_rows(y_b, ref[s][idx], n_classes)
        draws.append(acc / total_pairs)
    tail = 50.0 * (1.0 - level)
    low, high = np.percentile(np.concatenate(draws), [tail, 100.0 - tail])
    return float(low), float(high)


def _test_predictions(run_dir: Path) -> tuple[pd.DataFrame, list[str]]:
    """A run's labelled test rows of ``predictions.csv`` (utterance_id as index; label, pred) and
    its label list (the ``p_<label>`` columns)."""
    df = pd.read_csv(Path(run_dir) / "predictions.csv", dtype={"utterance_id": str, "label": str, "pred": str})
    labels = [c[2:] for c in df.columns if c.startswith("p_")]
    df = df[(df["split"] == "test") & df["label"].isin(labels)]
    return df.set_index("utterance_id")[["label", "pred"]], labels


def _test_wf1(run_dir: Path) -> float:
    """A run's test W-F1 from its metrics.json (NaN when it has none, e.g. a failed run)."""
    try:
        test = json.loads((Path(run_dir) / "metrics.json").read_text()).get("test") or {}
    except (OSError, ValueError):
        return math.nan
    return float(test.get("weighted_f1", math.nan))


def compare(reference: Mapping[Hashable, Path], variant: Mapping[Hashable, Path], level: float = LEVEL,
            resamples: int = RESAMPLES, seed: int = 0) -> Comparison | None:
    """Δ of ``variant``'s runs against ``reference``'s, paired by key (seed, or (seed, fold)):
    run directories holding ``metrics.json`` and ``predictions.csv``. None when no key is shared."""
    paired = {k: _test_wf1(variant[k]) - _test_wf1(reference[k]) for k in reference if k in variant}
    keys = [k for k, d in paired.items() if not math.isnan(d)]
    diffs = [paired[k] for k in keys]
    if not diffs:
        return None
    return Comparison(float(np.mean(diffs)), paired_t_interval(diffs, level),
                      _bootstrap(reference, variant, keys, level, resamples, seed), len(diffs))


def _bootstrap(reference: Mapping[Hashable, Path], variant: Mapping[Hashable, Path], keys: list[Hashable],
               level: float, resamples: int, seed: int) -> tuple[float, float]:
    try:
        read = [(_test_predictions(reference[k]), _test_predictions(variant[k])) for k in keys]
    except (OSError, ValueError, KeyError):
        return math.nan, math.nan
    classes = read[0][0][1]
    if any(r[1] != classes or v[1] != classes for r, v in read):
        return math.nan, math.nan  # runs on different label sets: nothing to pair
    code = {c: i for i, c in enumerate(classes)}
    frames = [(r[0], v[0]) for r, v in read]
    by_set: dict[tuple[str, ...], list[tuple[pd.DataFrame, pd.DataFrame]]] = {}
    for ref, var in frames:
        ids = tuple(sorted(set(ref.index) & set(var.index)))
        if ids:
            by_set.setdefault(ids, []).append((ref.loc[list(ids)], var.loc[list(ids)]))
    groups = []
    for pairs in by_set.values():
        y = pairs[0][0]["label"].map(code).to_numpy()
        groups.append((y, np.stack([r["pred"].map(code).to_numpy() for r, _ in pairs]),
                       np.stack([v["pred"].map(code).to_numpy() for _, v in pairs])))
    if not groups:
        return math.nan, math.nan
    return bootstrap_interval(groups, len(classes), level, resamples, seed)


def format_ci(ci: tuple[float, float], scale: float = 100.0) -> str:
    """``"[-1.23, +0.45]"`` (percentage points), with a trailing ``" *"`` when it contains 0;
    ``"n/a"`` for NaNs."""
    if any(math.isnan(v) for v in ci):
        return "n/a"
    mark = " *" if Comparison.contains_zero(ci) else ""
    return f"[{ci[0] * scale:+.2f}, {ci[1] * scale:+.2f}]{mark}"


ZERO_NOTE = "* the interval contains 0: not distinguishable from `full` at 95 %"
