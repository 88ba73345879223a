"""The one inference path: a head's class probabilities (and, on request, its utterance
representation) for dialogues of a :class:`~erc.train.dialogues.DialogueData`, and the one table
they become.

Training's dev / test evaluation, a run's ``predictions.csv``, ``erc predict`` and
:class:`erc.apply.Predictor` all call :func:`head_probs` and :func:`prediction_frame`: a change to
how probabilities are computed (masking, precision, calibration) is made here once.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import pandas as pd
import torch

from erc.errors import UserError
from erc.heads.base import Head
from erc.train.dialogues import DialogueData


@dataclass
class HeadProbs:
    """What :func:`head_probs` returns, in the order the dialogues were run.

    rows: ``[n]`` int64 cache rows; probs: ``[n, C]`` float32 softmax of the logits (computed in
    fp32); embeddings: ``[n, E]`` float32 or None."""

    rows: np.ndarray
    probs: np.ndarray
    embeddings: np.ndarray | None = None

    def only(self, keep: np.ndarray) -> HeadProbs:
        """The rows where ``keep [n]`` (bool) holds."""
        emb = None if self.embeddings is None else self.embeddings[keep]
        return HeadProbs(self.rows[keep], self.probs[keep], emb)

    def in_row_order(self, n: int) -> HeadProbs:
        """Scattered into cache row order ``0..n-1`` (every row must have been run)."""
        probs = np.zeros((n, self.probs.shape[1] if self.probs.ndim == 2 else 0), dtype=np.float32)
        probs[self.rows] = self.probs
        emb = None
        if self.embeddings is not None:
            emb = np.zeros((n, self.embeddings.shape[1]), dtype=np.float32)
            emb[self.rows] = self.embeddings
        return HeadProbs(np.arange(n, dtype=np.int64), probs, emb)


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
def head_probs(head: Head, data: DialogueData, dialogues: Sequence[int] | None = None,
               device: torch.device | str = "cpu", batch_size: int = 64, embeddings: bool = False) -> HeadProbs:
    """Run ``head`` (eval mode; logits softmaxed in fp32) over ``dialogues`` of ``data`` (indices;
    None = all, in cache order), ``batch_size`` dialogues a batch in the order given: every real
    utterance of those dialogues, whatever its split. With ``embeddings``, the head's
    representation (:meth:`~erc.heads.base.Head.representation_module`'s input) too."""
    head.eval()
    order = list(range(len(data))) if dialogues is None else list(dialogues)
    rows: list[np.ndarray] = []
    probs: list[np.ndarray] = []
    emb: list[np.ndarray] = []
    hook = capture_representation(head) if embeddings else contextlib.nullcontext([])
    with hook as seen:
        for i in range(0, len(order), batch_size):
            batch = data.collate(order[i:i + batch_size])
            seen.clear()
            logits = head(batch.to(device)).logits.float()
            mask = batch.mask.to(logits.device)
            rows.append(batch.index[batch.mask].numpy())
            probs.append(logits.softmax(-1)[mask].cpu().numpy())
            if embeddings:
                emb.append(gather_representation(seen, mask).cpu().numpy())
    if not rows:
        return HeadProbs(np.zeros(0, dtype=np.int64), np.zeros((0, len(data.labels)), dtype=np.float32),
                         np.zeros((0, 0), dtype=np.float32) if embeddings else None)
    return HeadProbs(np.concatenate(rows), np.concatenate(probs), np.concatenate(emb) if embeddings else None)


def split_probs(head: Head, data: DialogueData, split: str, device: torch.device | str = "cpu",
                batch_size: int = 64) -> HeadProbs:
    """:func:`head_probs` for the utterances assigned to ``split`` (its dialogues are run whole, so
    each utterance sees its context; rows of other splits are dropped)."""
    got = head_probs(head, data, data.dataset(split).dialogues, device, batch_size)
    return got.only(data.split_of[got.rows] == split)


def prediction_frame(data: DialogueData, got: HeadProbs, labels: Sequence[str]) -> pd.DataFrame:
    """One row per utterance of ``got``: utterance_id, dialogue_id, turn, speaker, label, split,
    pred and ``p_<class>`` (float32); an ``embedding`` column (``[E]`` float32 arrays) when ``got``
    carries embeddings. The columns of a run's ``predictions.csv`` and of ``erc predict``."""
    rows, p = got.rows, got.probs
    n = len(rows)
    df = pd.DataFrame({
        "utterance_id": [data.utterance_ids[r] for r in rows],
        "dialogue_id": [data.dialogue_names[c] for c in data.dialogue_codes[rows]],
        "turn": data.turns[rows],
        "speaker": [data.speaker_names[r] for r in rows],
        "label": [data.label_names[r] for r in rows],
        "split": [str(s) for s in data.split_of[rows]],
        "pred": [labels[i] for i in p.argmax(1)] if n else [],
    })
    for j, label in enumerate(labels):
        df[f"p_{label}"] = p[:, j] if n else np.zeros(0, dtype=np.float32)
    if got.embeddings is not None:
        df["embedding"] = list(got.embeddings)
    return df
