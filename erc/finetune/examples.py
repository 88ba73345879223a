"""Training examples for the Trainer: utterance windows (text) or waveforms (audio), with labels.

Only the rows given are built: the caller passes train and dev rows, never test ones, so a test
label is never read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from erc.corpus import Corpus, Utterance
from erc.errors import MediaError, UserError
from erc.extract.encoders.base import Encoder
from erc.finetune.pooled import target_masks


def positions(corpus: Corpus) -> list[tuple[list[Utterance], int]]:
    """``[N]``: each utterance's dialogue (turn order) and its position in it, by corpus row."""
    by_id = {u.utterance_id: (dlg, i) for dlg in corpus.dialogues().values() for i, u in enumerate(dlg)}
    return [by_id[u.utterance_id] for u in corpus.utterances]


class TextExamples(Dataset):
    """Tokenized windows of ``rows``: item ``i`` is ``{input_ids [T_i], attention_mask [T_i],
    (token_type_ids [T_i]), labels []}``, T_i <= ``max_length``, and with ``target`` also
    ``target_mask [T_i]`` (1 on the target turn's tokens: :func:`erc.finetune.pooled.target_masks`).
    ``window`` is the extractor's text encoder (its ``prepare`` builds the "Speaker: text" window
    of ``text.context``)."""

    def __init__(self, corpus: Corpus, rows: Sequence[int], labels: np.ndarray, window: Encoder, tokenizer: Any,
                 max_length: int, target: bool = False) -> None:
        if target and not getattr(tokenizer, "is_fast", False):
            raise UserError("pooling=target needs a fast tokenizer (character offsets); use pooling=cls")
        where = positions(corpus)
        items = [window.prepare(*where[r]) for r in rows]
        self.encoded = tokenizer([it.text for it in items], truncation=True, max_length=max_length,
                                 return_offsets_mapping=target, return_special_tokens_mask=target)
        if target:
            self.encoded["target_mask"] = target_masks(self.encoded.pop("offset_mapping"),
                                                       self.encoded.pop("special_tokens_mask"),
                                                       [it.span for it in items], window.pools_target)
        self.labels = [int(labels[r]) for r in rows]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {**{k: v[i] for k, v in self.encoded.items()}, "labels": self.labels[i]}


class AudioExamples(Dataset):
    """Waveforms of ``rows``, read when asked: item ``i`` is ``{"wave": [S_i] float32 at the
    model's rate, "labels": int}``; ``reader`` is the extractor's speech encoder (its ``prepare``
    cuts the utterance's segment and resamples)."""

    def __init__(self, corpus: Corpus, rows: Sequence[int], labels: np.ndarray, reader: Encoder) -> None:
        where = positions(corpus)
        self.items = [where[r] for r in rows]
        self.labels = [int(labels[r]) for r in rows]
        self.reader = reader

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, Any]:
        try:
            wave = self.reader.prepare(*self.items[i])
        except MediaError as e:  # a clip that exists but cannot be decoded: one line, not a traceback
            dlg, pos = self.items[i]
            raise UserError(f"utterance {dlg[pos].utterance_id}: its audio cannot be read ({e})") from None
        return {"wave": wave, "labels": self.labels[i]}


@dataclass
class AudioCollator:
    """A batch of waveforms through the feature extractor: ``input_values [B, S_max]``,
    ``attention_mask [B, S_max]`` (when the extractor makes one), ``labels [B]``."""

    extractor: Any
    sampling_rate: int

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        feats = self.extractor([it["wave"] for it in items], sampling_rate=self.sampling_rate, padding=True,
                               return_attention_mask=True, return_tensors="pt")
        out = {k: v for k, v in feats.items() if k in ("input_values", "input_features", "attention_mask")}
        out["labels"] = torch.tensor([it["labels"] for it in items], dtype=torch.long)
        return out
