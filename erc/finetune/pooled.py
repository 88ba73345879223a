"""Fine-tuning on the target turn's token mean (``FinetuneConfig.pooling = "target"``).

Transformers' sequence classifiers read the first token. ``erc extract`` pools a context window
differently (``text.pool_over=target``: the mean of the target turn's context-aware tokens), and
that is the vector the heads read; this module fine-tunes the encoder through that same vector:
an ``AutoModel`` backbone, the masked mean of its last hidden states over ``target_mask``,
dropout, a linear classifier. The backbone alone is saved (``save_pretrained``), so the folder
loads like any encoder and extraction pools it as it was trained.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers.modeling_outputs import SequenceClassifierOutput

from erc.extract.encoders.text import target_token_mask


class TargetMeanClassifier(nn.Module):
    """``logits [B, C]`` = Linear(Dropout(mean of ``backbone(...)`` hidden states ``[B, T, D]``
    over the tokens where ``target_mask [B, T]`` is 1)). A row with no target token (cannot
    happen with :func:`target_masks`) would pool to zeros."""

    _keys_to_ignore_on_save = None  # read by the Trainer after loading a checkpoint into a plain module

    def __init__(self, backbone: nn.Module, n_classes: int, dropout: float) -> None:
        super().__init__()
        self.backbone = backbone
        self.config = backbone.config  # the Trainer reads model.config (e.g. for its model card)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(int(backbone.config.hidden_size), n_classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, target_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None, **_: Any) -> SequenceClassifierOutput:
        extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state
        m = target_mask.unsqueeze(-1).to(hidden.dtype)  # [B, T, 1]
        pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)  # [B, D]
        return SequenceClassifierOutput(logits=self.classifier(self.dropout(pooled)))


def target_masks(offsets: list[list[tuple[int, int]]], special: list[list[int]], spans: list[tuple[int, int]],
                 pools_target: bool) -> list[list[int]]:
    """Per (unpadded) example, 1 on the tokens the extractor's mean pooling averages: with
    ``pools_target`` (the window encoder's :attr:`~erc.extract.encoders.text.HFTextEncoder.pools_target`)
    :func:`~erc.extract.encoders.text.target_token_mask` (the target turn's non-special tokens; all
    tokens where none is left), else every token. ``offsets`` / ``special``: the fast tokenizer's
    offset mapping and special-tokens mask of each example."""
    out = []
    for offs, spec, span in zip(offsets, special, spans):
        if not pools_target:
            out.append([1] * len(spec))
            continue
        keep = target_token_mask(torch.ones(1, len(spec), dtype=torch.bool), torch.tensor([spec], dtype=torch.bool),
                                 torch.tensor([offs], dtype=torch.long).reshape(1, -1, 2), [span])
        out.append([int(k) for k in keep[0].tolist()])
    return out


@dataclass
class TargetCollator:
    """Pads a batch as transformers' ``DataCollatorWithPadding`` does (``input_ids``, ``attention_mask``, ... ``[B, T_max]``)
    and ``target_mask`` to the same ``T_max`` with zeros, on the tokenizer's padding side."""

    tokenizer: Any

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        from transformers import DataCollatorWithPadding

        masks = [it["target_mask"] for it in items]
        batch = DataCollatorWithPadding(self.tokenizer)([{k: v for k, v in it.items() if k != "target_mask"} for it in items])
        width = batch["input_ids"].shape[1]
        left = getattr(self.tokenizer, "padding_side", "right") == "left"
        batch["target_mask"] = torch.tensor([([0] * (width - len(m)) + m) if left else (m + [0] * (width - len(m)))
                                             for m in masks], dtype=torch.long)
        return dict(batch)
