"""What predictions become: scores per split where labels are present, the lines ``erc predict``
prints, and the CSV / JSONL files (a run's ``predictions.csv`` and ``erc predict``'s output)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from erc.errors import UserError
from erc.train.metrics import classification_metrics


def scores(df: pd.DataFrame, labels: list[str]) -> dict[str, dict[str, Any]]:
    """Scores of the rows whose label is one of ``labels``, per split (and ``"all"`` when there are
    several): :func:`~erc.train.metrics.classification_metrics`. Empty when no row is labelled."""
    index = {name: i for i, name in enumerate(labels)}
    known = df["label"].map(index)
    rows = df[known.notna()]
    out: dict[str, dict[str, Any]] = {}
    if not len(rows):
        return out
    y = known[known.notna()].astype(int).to_numpy()
    pred = rows["pred"].map(index).to_numpy()
    splits = rows["split"].to_numpy()
    for s in dict.fromkeys(splits.tolist()):
        keep = splits == s
        out[str(s)] = classification_metrics(y[keep], pred[keep], labels)
    if len(out) > 1:
        out["all"] = classification_metrics(y, pred, labels)
    return out


def write_predictions(df: pd.DataFrame, path: str | Path, fmt: str = "csv", digits: int = 6) -> Path:
    """Write ``df`` as CSV (an ``embedding`` column spread over ``emb_0..emb_{E-1}``) or JSONL
    (one object per utterance, ``embedding`` as a list). Probabilities rounded to ``digits``."""
    path = Path(path)
    if fmt not in ("csv", "jsonl"):
        raise UserError(f"--format must be csv or jsonl; got {fmt!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    out = df.copy()
    prob_cols = [c for c in out.columns if c.startswith("p_")]
    out[prob_cols] = out[prob_cols].astype(np.float64).round(digits)
    if fmt == "csv":
        if "embedding" in out.columns:
            emb = np.stack(out.pop("embedding").to_list()) if len(out) else np.zeros((0, 0))
            out = pd.concat([out, pd.DataFrame(emb, columns=[f"emb_{i}" for i in range(emb.shape[1])], index=out.index)], axis=1)
        out.to_csv(path, index=False)
    else:
        if "embedding" in out.columns:
            out["embedding"] = [np.round(e.astype(np.float64), digits).tolist() for e in out["embedding"]]
        out.to_json(path, orient="records", lines=True, force_ascii=False)
    return path


def summary_lines(df: pd.DataFrame, labels: list[str]) -> list[str]:
    """What ``erc predict`` prints: the scores per split where utterances carry labels the run
    knows, else the predicted label distribution; a note on labels the run does not know."""
    lines = []
    got = scores(df, labels) if "label" in df.columns else {}
    for split, m in got.items():
        lines.append(f"{split}: W-F1 {m['weighted_f1'] * 100:.2f} | acc {m['accuracy'] * 100:.2f} "
                     f"| macro F1 {m['macro_f1'] * 100:.2f} ({m['n']} labelled utterances)")
    if "label" in df.columns:
        unknown = df["label"][(df["label"] != "") & ~df["label"].isin(labels)]
        if len(unknown):
            names = ", ".join(sorted(set(unknown))[:5])
            lines.append(f"note: {len(unknown)} utterance(s) have labels the run does not know ({names}): not scored")
    if not got:
        counts = df["pred"].value_counts()
        n = max(len(df), 1)
        parts = [f"{label} {int(counts.get(label, 0))} ({counts.get(label, 0) / n * 100:.1f}%)" for label in labels]
        lines.append(f"predicted labels of {len(df)} unlabelled utterances: " + ", ".join(parts))
    return lines

