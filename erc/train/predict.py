"""Predict a cache's utterances (a file, or one held in memory) with a trained run or with the seed
ensemble of a sweep folder: probabilities averaged over the runs, one row per utterance.

Nothing here needs labels or a dev split: every utterance of the cache is predicted; where labels
are present, :func:`scores` scores them.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd
import torch

from erc.errors import UserError
from erc.features.memory import MemoryCache
from erc.features.reader import FeatureCache
from erc.heads.base import Head
from erc.train.dialogues import DialogueData
from erc.train.metrics import classification_metrics
from erc.train.runs import LoadedRun, check_compatible, load_run, run_members


@dataclass
class Ensemble:
    """The trained runs a ``--run`` path names (one run, or a sweep's seeds), all on the same
    labels, encoder groups and frame settings."""

    runs: list[LoadedRun]
    dirs: list[Path]

    @property
    def first(self) -> LoadedRun:
        return self.runs[0]

    @property
    def labels(self) -> list[str]:
        return self.first.labels

    @property
    def encoders(self) -> dict[str, str]:
        """Modality -> encoder group the runs read."""
        return self.first.encoders

    @property
    def groups(self) -> dict[str, dict[str, Any]]:
        """Modality -> the provenance (attributes) of the cache group the runs were trained on."""
        return self.first.provenance.get("groups", {})

    @property
    def frames(self) -> list[str]:
        """Modalities whose frames some run's head reads."""
        return list(dict.fromkeys(m for r in self.runs for m in r.inputs.frame_dims))

    @property
    def max_frames(self) -> int | None:
        return self.first.config.get("train", {}).get("max_frames")

    def to(self, device: torch.device | str) -> Ensemble:
        for r in self.runs:
            r.head.to(device)
        return self


def load_ensemble(path: str | Path) -> Ensemble:
    """The run at ``path`` or the finished runs of the sweep folder ``path`` (UserError when there
    are none, or when they were trained on different labels, encoders or frame settings)."""
    dirs = run_members(path)
    runs = [load_run(d) for d in dirs]
    first = runs[0]
    for d, r in zip(dirs[1:], runs[1:]):
        what = None
        if r.labels != first.labels:
            what = "labels"
        elif r.encoders != first.encoders or _hashes(r) != _hashes(first):
            what = "encoder groups (or encoder configs)"
        elif r.config.get("train", {}).get("max_frames") != first.config.get("train", {}).get("max_frames"):
            what = "max_frames"
        if what:
            raise UserError(f"{d} and {dirs[0]} were trained on different {what}; the runs of an ensemble must "
                            "share their input")
    return Ensemble(runs, dirs)


def _hashes(run: LoadedRun) -> dict[str, Any]:
    return {m: g.get("attrs", {}).get("config_hash") for m, g in run.provenance.get("groups", {}).items()}


@contextlib.contextmanager
def capture_representation(head: Head) -> Iterator[list[torch.Tensor]]:
    """Collect the inputs of ``head.representation_module()`` during forward passes (a forward
    pre-hook: the head's computation is unchanged)."""
    seen: list[torch.Tensor] = []
    try:
        module = head.representation_module()
    except NotImplementedError as e:
        raise UserError(f"no embeddings from this head: {e}") from None
    handle = module.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach()))
    try:
        yield seen
    finally:
        handle.remove()


def gather_representation(seen: list[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
    """``[N, E]`` over the real utterances of the batch from the captured ``[B, L, E_i]`` / ``[N, E_i]``."""
    n = int(mask.sum())
    parts = []
    for x in seen:
        if x.dim() == 3 and tuple(x.shape[:2]) == tuple(mask.shape):
            parts.append(x[mask])
        elif x.dim() == 2 and x.shape[0] == n:
            parts.append(x)
        else:
            raise ValueError(f"a representation of shape {tuple(x.shape)} fits neither [B, L, E] nor [N, E] "
                             f"for a batch of mask {tuple(mask.shape)}")
    return torch.cat(parts, dim=-1).float()


@torch.no_grad()
def run_probs(head: Head, data: DialogueData, device: torch.device | str = "cpu", batch_size: int = 64,
              embeddings: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """Every utterance of ``data`` through ``head`` (eval mode, fp32): ``probs [N, C]`` in cache row
    order and, with ``embeddings``, the head's representation ``[N, E]``."""
    head.eval()
    n = len(data.utterance_ids)
    probs: np.ndarray | None = None
    emb: np.ndarray | None = None
    hook = capture_representation(head) if embeddings else contextlib.nullcontext([])
    with hook as seen:
        for i in range(0, len(data), batch_size):
            batch = data.collate(list(range(i, min(i + batch_size, len(data)))))
            seen.clear()
            logits = head(batch.to(device)).logits.float()
            mask = batch.mask.to(logits.device)
            rows = batch.index[batch.mask].numpy()
            if probs is None:
                probs = np.zeros((n, logits.shape[-1]), dtype=np.float32)
            probs[rows] = logits.softmax(-1)[mask].cpu().numpy()
            if embeddings:
                e = gather_representation(seen, mask).cpu().numpy()
                if emb is None:
                    emb = np.zeros((n, e.shape[1]), dtype=np.float32)
                emb[rows] = e
    if probs is None:
        probs = np.zeros((0, 0), dtype=np.float32)
    return probs, emb


def predict_frame(ens: Ensemble, fc: FeatureCache | MemoryCache, device: torch.device | str = "cpu",
                  batch_size: int = 64, embeddings: bool = False) -> pd.DataFrame:
    """One row per utterance of the cache: utterance_id, dialogue_id, turn, speaker, label, split,
    pred and ``p_<class>`` (probabilities averaged over the ensemble's runs); with ``embeddings``,
    an ``embedding`` column holding the first run's representation ``[E]`` (float32 arrays).

    Refuses (UserError) a cache whose encoders, dims or label list differ from the runs'."""
    for r in ens.runs:
        check_compatible(r, fc)  # type: ignore[arg-type]
    data = DialogueData(fc, ens.encoders, ens.frames, ens.max_frames, dev_fraction=None)  # type: ignore[arg-type]
    cols = fc.utterances()
    total: np.ndarray | None = None
    emb = None
    for k, r in enumerate(ens.runs):
        probs, e = run_probs(r.head, data, device, batch_size, embeddings and k == 0)
        total = probs.astype(np.float64) if total is None else total + probs
        emb = e if k == 0 else emb
    assert total is not None
    p = (total / len(ens.runs)).astype(np.float32)
    n = len(data.utterance_ids)
    df = pd.DataFrame({
        "utterance_id": data.utterance_ids,
        "dialogue_id": list(cols["dialogue_id"]),
        "turn": np.asarray(cols.get("turn", np.arange(n)), dtype=np.int64),
        "speaker": list(cols["speaker"]),
        "label": data.label_names,
        "split": list(data.split_of),
        "pred": [ens.labels[i] for i in p.argmax(1)] if n else [],
    })
    for j, label in enumerate(ens.labels):
        df[f"p_{label}"] = p[:, j] if n else []
    if emb is not None:
        df["embedding"] = list(emb)
    return df


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

