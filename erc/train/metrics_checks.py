"""Whether a run's ``metrics.json`` holds scores that can be reported: a hand-edited or damaged
file with a string where a number belongs, or a score outside ``[0, 1]`` (``weighted_f1 = 15``
would print as 1500.00), makes the run "not a result", with the reason."""

from __future__ import annotations

import math
from typing import Any

SCORES = ("weighted_f1", "accuracy", "macro_f1")
REQUIRED = ("weighted_f1",)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _score_problem(name: str, value: Any, allow_nan: bool = False) -> str | None:
    if not _number(value):
        return f"{name} is {value!r}, not a number"
    if math.isnan(value) and allow_nan:
        return None
    if not math.isfinite(value):
        return f"{name} is {value!r}, not finite"
    if not 0.0 <= value <= 1.0:
        return f"{name} is {value!r}, outside [0, 1]"
    return None


def split_problem(split: str, scores: Any) -> str | None:
    """Why the scores of one split cannot be reported, or None."""
    if not isinstance(scores, dict):
        return f"its {split} scores are not a JSON object"
    for key in SCORES:
        if key in scores or key in REQUIRED:
            if key not in scores:
                return f"its {split} scores are missing {key}"
            why = _score_problem(f"{split} {key}", scores[key])
            if why:
                return why
    per_class = scores.get("per_class_f1")
    if per_class is not None:
        if not isinstance(per_class, dict):
            return f"its {split} per_class_f1 is not a JSON object"
        for name, value in per_class.items():
            if value is None:  # the class is absent from the split
                continue
            why = _score_problem(f"{split} F1 of class {name}", value, allow_nan=True)
            if why:
                return why
    confusion = scores.get("confusion")
    if confusion is not None and not (isinstance(confusion, list) and all(
            isinstance(row, list) and len(row) == len(confusion) and all(_number(c) and c >= 0 for c in row)
            for row in confusion)):
        return f"its {split} confusion is not a square table of counts"
    return None


def metrics_problem(metrics: dict[str, Any]) -> str | None:
    """Why a run's metrics cannot be reported, or None."""
    for split in ("dev", "test"):
        if metrics.get(split) is not None:
            why = split_problem(split, metrics[split])
            if why:
                return why
    best = metrics.get("best_epoch")
    if best is not None and (not _number(best) or isinstance(best, float) and not best.is_integer()):
        return f"best_epoch is {best!r}, not an epoch number"
    return None
