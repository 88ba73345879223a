"""Classification metrics for ERC (scikit-learn): weighted F1 is the primary score."""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score


def classification_metrics(y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray, labels: Sequence[str]) -> dict[str, Any]:
    """Scores of predictions ``y_pred [n]`` against ``y_true [n]`` (class indices into ``labels``).

    Returns ``weighted_f1``, ``accuracy``, ``macro_f1`` (floats in 0..1), ``per_class_f1``
    (label -> F1), ``support`` (label -> count), ``confusion`` (``[C, C]`` list, rows = true),
    and ``n``. A class absent from both arrays has no F1 (None) and is left out of macro F1, so
    a test split without, say, any "fear" does not drag macro F1 down with a meaningless 0.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    idx = list(range(len(labels)))
    if len(y_true) == 0:
        return {"n": 0, "weighted_f1": float("nan"), "accuracy": float("nan"), "macro_f1": float("nan"),
                "per_class_f1": {}, "support": {}, "confusion": [], "labels": list(labels)}
    per = f1_score(y_true, y_pred, labels=idx, average=None, zero_division=0)
    seen = sorted(set(y_true.tolist()) | set(y_pred.tolist()))
    return {
        "n": int(len(y_true)),
        "weighted_f1": float(f1_score(y_true, y_pred, labels=idx, average="weighted", zero_division=0)),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=seen, average="macro", zero_division=0)),
        "per_class_f1": {name: (float(v) if i in seen else None) for i, (name, v) in enumerate(zip(labels, per))},
        "support": {name: int((y_true == i).sum()) for i, name in enumerate(labels)},
        "confusion": confusion_matrix(y_true, y_pred, labels=idx).tolist(),
        "labels": list(labels),
    }


def weighted_f1(y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray) -> float:
    """Support-weighted F1 over the classes present in ``y_true``/``y_pred``."""
    if len(y_true) == 0:
        return float("nan")
    return float(f1_score(y_true, y_pred, average="weighted", zero_division=0))


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0 for a single value). NaNs are dropped."""
    vals = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=np.float64)
    if len(vals) == 0:
        return float("nan"), float("nan")
    return float(vals.mean()), float(vals.std(ddof=1)) if len(vals) > 1 else 0.0


def summarise(values: Sequence[float], scale: float = 100.0, digits: int = 2, sep: str = " ± ") -> str:
    """``"mean ± std"`` of ``values`` (scaled, e.g. 0.7358 -> ``"73.58 ± 0.00"``; ``sep="±"`` gives
    the compact ``"73.58±0.00"`` of the terminal tables)."""
    mean, std = mean_std(values)
    if math.isnan(mean):
        return "n/a"
    return f"{mean * scale:.{digits}f}{sep}{std * scale:.{digits}f}"


def aggregate(metrics: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean/std over runs of the scalar scores and per-class F1 of :func:`classification_metrics`."""
    out: dict[str, Any] = {"n_runs": len(metrics)}
    for key in ("weighted_f1", "accuracy", "macro_f1"):
        vals = [m[key] for m in metrics if m]
        mean, std = mean_std(vals)
        out[key] = {"mean": mean, "std": std, "values": vals}
    names = [n for m in metrics if m for n in m.get("per_class_f1", {})]
    out["per_class_f1"] = {}
    for name in dict.fromkeys(names):
        mean, std = mean_std([m["per_class_f1"].get(name, float("nan")) for m in metrics if m])
        out["per_class_f1"][name] = {"mean": mean, "std": std}
    return out
