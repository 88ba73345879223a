"""Baselines every head must beat on the same cache.

- ``mlp``: concatenation of the present modalities' pooled vectors, no dialogue context, an MLP.
- ``gru``: per-modality projections, concatenated, a bidirectional GRU over the dialogue (packed,
  so padding never changes real outputs), optional speaker embedding, a linear classifier;
  variant ``party`` adds a second BiGRU over each speaker's own turns (DialogueRNN's party state,
  simplified) whose outputs are concatenated with the dialogue GRU's; ``attention_pool`` adds, per
  modality, a learned attention pooling of the cached frames (e.g. the utterance's token vectors)
  next to the cache's pooled vector.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from erc.config import Checked, Dropout, Positive
from erc.errors import UserError
from erc.heads.base import DialogueBatch, Head, HeadInputs, HeadOutput
from erc.heads.blocks import AttentionPool, DialogueGRU, PartyGRU, mlp

MODALITIES = ("text", "audio", "video")


def _modalities(inputs: HeadInputs, name: str) -> list[str]:
    mods = [m for m in MODALITIES if m in inputs.pooled_dims]
    if not mods:
        raise UserError(f"{name} needs at least one of text, audio, video pooled features")
    return mods


def _concat(batch: DialogueBatch, mods: list[str], norms: nn.ModuleDict) -> torch.Tensor:
    """``[B, L, sum D_m]``: each modality layer-normed, absent utterances zeroed."""
    parts = [norms[m](batch.pooled[m]) * batch.present[m].unsqueeze(-1).to(batch.pooled[m].dtype) for m in mods]
    return torch.cat(parts, dim=-1)


@dataclass
class MLPConfig(Checked):
    hidden: Positive = 256
    layers: Positive = 2
    dropout: Dropout = 0.3


class MLPHead(Head):
    """Concat + MLP, utterance by utterance (no context)."""

    Config: ClassVar[type] = MLPConfig
    variants: ClassVar[dict[str, dict[str, Any]]] = {"full": {}}

    def __init__(self, config: MLPConfig, inputs: HeadInputs) -> None:
        super().__init__(config, inputs)
        self.mods = _modalities(inputs, "mlp")
        self.norms = nn.ModuleDict({m: nn.LayerNorm(inputs.pooled_dims[m]) for m in self.mods})
        d_in = sum(inputs.pooled_dims[m] for m in self.mods)
        self.net = nn.Sequential(nn.Dropout(config.dropout),
                                 mlp(d_in, config.hidden, inputs.n_classes, config.dropout, config.layers))

    def representation_module(self) -> nn.Module:
        """The MLP's last linear layer: its input is the last hidden layer ``[B, L, hidden]``."""
        return self.net[1][-1]

    def forward(self, batch: DialogueBatch) -> HeadOutput:
        """pooled[m] ``[B, L, D_m]`` -> logits ``[B, L, C]``."""
        logits = self.net(_concat(batch, self.mods, self.norms))
        return HeadOutput(logits=logits, aux_loss=logits.sum() * 0.0)


@dataclass
class GRUConfig(Checked):
    hidden: Positive = 128  # per direction
    proj: Positive = 256  # width after the input projection
    layers: Positive = 1
    speaker_embedding: bool = True
    party: bool = False  # add a BiGRU over each speaker's own turns (variant "party")
    attention_pool: bool = False  # also pool each modality's cached frames with learned attention
    max_speakers: Positive = 16  # speaker ids at or above this share the last embedding
    dropout: Dropout = 0.3


class GRUHead(Head):
    """Bidirectional GRU over the dialogue of concatenated modality vectors."""

    Config: ClassVar[type] = GRUConfig
    variants: ClassVar[dict[str, dict[str, Any]]] = {"full": {}, "no-speaker": {"speaker_embedding": False},
                                                     "party": {"party": True},
                                                     "party-attn": {"party": True, "attention_pool": True}}

    def __init__(self, config: GRUConfig, inputs: HeadInputs) -> None:
        super().__init__(config, inputs)
        c = config
        self.mods = _modalities(inputs, "gru")
        self.norms = nn.ModuleDict({m: nn.LayerNorm(inputs.pooled_dims[m]) for m in self.mods})
        d_in = sum(inputs.pooled_dims[m] for m in self.mods)
        pooled_frames = [m for m in self.mods if m in inputs.frame_dims] if c.attention_pool else []
        self.pools = nn.ModuleDict({m: AttentionPool(inputs.frame_dims[m]) for m in pooled_frames})
        self.pool_norms = nn.ModuleDict({m: nn.LayerNorm(inputs.frame_dims[m]) for m in pooled_frames})
        d_in += sum(inputs.frame_dims[m] for m in pooled_frames)
        self.inp = nn.Sequential(nn.Dropout(c.dropout), nn.Linear(d_in, c.proj), nn.GELU())
        self.speaker = nn.Embedding(c.max_speakers, c.proj) if c.speaker_embedding else None
        self.gru = DialogueGRU(c.proj, c.hidden, c.layers, c.dropout)
        self.party = PartyGRU(c.proj, c.hidden) if c.party else None
        width = self.gru.out_dim + (self.party.out_dim if self.party is not None else 0)
        self.classifier = nn.Sequential(nn.Dropout(c.dropout), nn.Linear(width, inputs.n_classes))

    @classmethod
    def frames_for(cls, config: GRUConfig, modalities: list[str]) -> list[str]:
        return [m for m in MODALITIES if m in modalities] if config.attention_pool else []

    def forward(self, batch: DialogueBatch) -> HeadOutput:
        """pooled[m] ``[B, L, D_m]``, speakers ``[B, L]`` (frames[m] ``[B, L, T, F_m]`` with
        attention_pool) -> logits ``[B, L, C]``."""
        x = _concat(batch, self.mods, self.norms)
        if len(self.pools):
            pooled = [self.pool_norms[m](self.pools[m](batch.frames[m], batch.frame_mask[m]))
                      * batch.present[m].unsqueeze(-1).to(x.dtype) for m in self.pools]
            x = torch.cat([x, *pooled], dim=-1)
        x = self.inp(x)
        if self.speaker is not None:
            x = x + self.speaker(batch.speakers.clamp(0, self.config.max_speakers - 1))
        h = self.gru(x, batch.mask)
        if self.party is not None:
            h = torch.cat([h, self.party(x, batch.mask, batch.speakers)], dim=-1)
        logits = self.classifier(h)
        return HeadOutput(logits=logits, aux_loss=logits.sum() * 0.0)
