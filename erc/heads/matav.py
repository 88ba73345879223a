"""MaTAV: Mamba-enhanced text-audio-video alignment network.

Per utterance: projection heads g_t, g_a, g_v map each modality's pooled vector to a 256-d
embedding (L2-normalised for the contrastive loss); momentum (EMA) copies of the projection
heads fill three queues of the last M momentum embeddings; MEC loss = InfoNCE of T->A', A->V',
T->V' against those queues. The modality tokens ``[t || a || v]`` go through a 6-layer
cross-attention fusion, are merged by W_F and an FC into z_i; the dialogue ``[z_1..z_n]`` goes
through Mamba; a linear softmax classifier predicts each utterance's label.

Unpublished choices (ours): queue 4096, momentum 0.995, temperature 0.07, Mamba 2 layers of
state 16 / expand 2 / conv 4, feed-forward width 2 x 256 in the fusion, learned modality-type
embeddings on the tokens. Paper's optimisation: batch 64, lr 1e-4, weight decay 1e-5, 100 epochs
(``train_defaults``), loss = CE + 0.3 MEC.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from erc.config import Checked, Dropout, NonNegativeFloat, Positive, PositiveFloat, UnitInterval
from erc.errors import UserError
from erc.heads.base import DialogueBatch, Head, HeadInputs, HeadOutput
from erc.heads.blocks import DialogueContext, TokenFusion, mlp
from erc.heads.losses import mec_loss

MODALITIES = ("text", "audio", "video")


@dataclass
class MaTAVConfig(Checked):
    dim: Positive = 256  # projection / token width (paper: 256)
    hidden: Positive = 256  # width of z_i and of the Mamba
    queue_size: Positive = 4096  # M, per modality (ours)
    momentum: UnitInterval = 0.995  # EMA of the momentum projection heads (ours)
    temperature: PositiveFloat = 0.07  # InfoNCE temperature (ours)
    fusion_layers: int = 6
    fusion_heads: Positive = 4
    fusion_ff_mult: Positive = 1  # feed-forward width = mult x dim in the fusion layers (ours; cheap on CPU)
    mamba_layers: int = 2  # ours
    bidirectional: bool = False  # a second Mamba over each dialogue reversed (not in the paper)
    use_mamba: bool = True  # False: the no-mamba ablation (no dialogue context)
    use_mec: bool = True  # False: the no-mec ablation
    mec_weight: NonNegativeFloat = 0.3
    dropout: Dropout = 0.1


class MaTAV(Head):
    Config: ClassVar[type] = MaTAVConfig
    variants: ClassVar[dict[str, dict[str, Any]]] = {
        "full": {}, "no-mamba": {"use_mamba": False}, "no-mec": {"use_mec": False},
    }
    train_defaults: ClassVar[dict[str, Any]] = {"lr": 1e-4, "weight_decay": 1e-5, "batch_size": 64, "epochs": 100}

    def __init__(self, config: MaTAVConfig, inputs: HeadInputs) -> None:
        super().__init__(config, inputs)
        c = config
        self.mods = [m for m in MODALITIES if m in inputs.pooled_dims]
        if not self.mods:
            raise UserError("matav needs at least one of text, audio, video pooled features")
        self.proj = nn.ModuleDict({m: mlp(inputs.pooled_dims[m], c.dim, c.dim, c.dropout) for m in self.mods})
        self.type_emb = nn.Parameter(torch.zeros(len(self.mods), c.dim))
        nn.init.normal_(self.type_emb, std=0.02)
        self.fusion = TokenFusion(c.dim, c.fusion_heads, c.fusion_layers, c.dropout, c.fusion_ff_mult)
        self.w_f = nn.Linear(len(self.mods) * c.dim, c.dim)  # W_F: merge of the fused tokens
        self.fc = nn.Sequential(nn.GELU(), nn.Dropout(c.dropout), nn.Linear(c.dim, c.hidden))  # -> z_i
        self.context = DialogueContext("mamba" if c.use_mamba else "none", c.hidden, c.mamba_layers,
                                       c.bidirectional, c.dropout)
        self.classifier = nn.Sequential(nn.Dropout(c.dropout), nn.Linear(c.hidden, inputs.n_classes))
        self.mec_on = c.use_mec and len(self.mods) >= 2
        if self.mec_on:
            self.proj_m = copy.deepcopy(self.proj)
            for p in self.proj_m.parameters():
                p.requires_grad_(False)
            for m in self.mods:
                # MoCo: the queue starts as random unit vectors, replaced as momentum keys arrive
                self.register_buffer(f"queue_{m}", F.normalize(torch.randn(c.queue_size, c.dim), dim=-1))
                self.register_buffer(f"queue_ptr_{m}", torch.zeros((), dtype=torch.long))

    @property
    def backend(self) -> str:
        """What runs the dialogue context: "mamba-ssm", "torch+c-scan" / "torch" (Mamba in PyTorch, its
        scan in C or in PyTorch) or "none"."""
        return self.context.backend

    # ---- momentum queues -------------------------------------------------------------------
    def queue(self, m: str) -> torch.Tensor:
        """Modality ``m``'s queue of momentum keys, ``[M, dim]``."""
        return getattr(self, f"queue_{m}")

    @torch.no_grad()
    def enqueue(self, m: str, keys: torch.Tensor) -> None:
        """Write ``keys [n, dim]`` into the ring buffer at the pointer (wrapping; if n > M only the
        last M are kept), then advance the pointer modulo M."""
        q = getattr(self, f"queue_{m}")
        size = q.shape[0]
        if keys.shape[0] == 0 or size == 0:
            return
        keys = keys[-size:].to(q.dtype)
        ptr = getattr(self, f"queue_ptr_{m}")
        idx = (ptr + torch.arange(keys.shape[0], device=q.device)) % size
        q[idx] = keys
        ptr.copy_((ptr + keys.shape[0]) % size)

    @torch.no_grad()
    def momentum_update(self) -> None:
        """EMA: θ' ← m θ' + (1 - m) θ for every momentum projection parameter."""
        if not self.mec_on:
            return
        m = self.config.momentum
        keys, online = list(self.proj_m.parameters()), [p.detach() for p in self.proj.parameters()]
        torch._foreach_mul_(keys, m)
        torch._foreach_add_(keys, online, alpha=1.0 - m)

    def after_step(self) -> None:
        self.momentum_update()

    # ---- forward ---------------------------------------------------------------------------
    def forward(self, batch: DialogueBatch) -> HeadOutput:
        """pooled[m]: ``[B, L, D_m]`` -> logits ``[B, L, C]``; aux_loss = mec_weight * MEC (train)."""
        mask = batch.mask
        B, L = mask.shape
        pres = {m: batch.present[m] & mask for m in self.mods}
        emb = {m: self.proj[m](batch.pooled[m][mask]) for m in self.mods}  # real utterances [N, dim]
        tokens = torch.stack([emb[m] + self.type_emb[i] for i, m in enumerate(self.mods)], dim=1)
        valid = torch.stack([pres[m][mask] for m in self.mods], dim=1)  # [N, K]
        fused = self.fusion(tokens, valid) * valid.unsqueeze(-1).to(tokens.dtype)  # [N, K, dim]
        z_real = self.fc(self.w_f(fused.flatten(1)))  # [N, hidden]
        z = z_real.new_zeros(B, L, z_real.shape[-1]).masked_scatter(mask.unsqueeze(-1), z_real)
        h = self.context(z, mask)
        logits = self.classifier(h)

        aux = logits.sum() * 0.0
        parts: dict[str, float] = {}
        if self.mec_on and self.training:
            aux, parts = self._mec(batch, emb, pres)
        return HeadOutput(logits=logits, aux_loss=aux, parts=parts)

    def _mec(self, batch: DialogueBatch, emb: dict[str, torch.Tensor],
             pres: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        rows = batch.mask & (batch.labels != -100)  # [B, L]
        labelled = rows[batch.mask]  # [N]: real utterances that carry a label
        q = {m: F.normalize(emb[m][labelled], dim=-1) for m in self.mods}  # [N', dim]
        valid = {m: pres[m][rows] for m in self.mods}
        self.proj_m.eval()  # keys without dropout
        with torch.no_grad():
            k = {m: F.normalize(self.proj_m[m](batch.pooled[m][rows]), dim=-1) for m in self.mods}
        queues = {m: self.queue(m).clone() for m in self.mods}
        loss, n_pairs = mec_loss(q, k, queues, valid, self.config.temperature)
        for m in self.mods:  # enqueue after the loss (MoCo): present, real utterances only
            self.enqueue(m, k[m][valid[m]])
        if n_pairs == 0:
            return loss, {}
        return self.config.mec_weight * loss, {"mec": float(loss.detach())}
