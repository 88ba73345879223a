"""DeepMSI-MER: semantic-guided visual sequence compression, TCN, label-aware contrastive loss.

Per utterance (no dialogue context): text and audio pooled vectors -> semantic vector ``s``.
Visual sequence compression (VSC) over the video frames ``[T, F_v]`` (projected to ``dim``):
relevance w = softmax_t(cos(f_t, s) / τ_vsc) over real frames; frames with
``w_t >= vsc_threshold / T_real`` are relevant (the best frame always is); each irrelevant frame is
merged (averaged) into its most similar relevant frame; relevant frames keep their temporal
order, compacted to the left. A straight-through factor w_t / sg(w_t) (value 1) lets the
gradient reach the semantic path. A TCN (causal, dilations 1/2/4, kernel 3) runs over the
compressed sequence; its last real step is the video vector. Text, audio and video are projected
to 256; loss = CE + 0.5 (LAC(v, t) + LAC(v, a)) with temperature 0.5; an MLP classifies the
concatenation. Unpublished (ours): τ_vsc 0.1, threshold 1.0 x uniform, frame width 256.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from erc.config import Checked, Dropout, NonNegativeFloat, Positive, PositiveFloat
from erc.errors import UserError
from erc.heads.base import DialogueBatch, Head, HeadInputs, HeadOutput
from erc.heads.blocks import TCN, mlp
from erc.heads.losses import label_aware_contrastive


@dataclass
class DeepMSIConfig(Checked):
    dim: Positive = 256  # projection width (paper: 256)
    hidden: Positive = 256  # MLP classifier width
    use_vsc: bool = True
    vsc_temperature: PositiveFloat = 0.1
    vsc_threshold: NonNegativeFloat = 1.0  # relevant if softmax weight >= threshold / number of real frames
    tcn_kernel: Positive = 3
    tcn_dilations: tuple[Positive, ...] = (1, 2, 4)
    use_contrastive: bool = True
    contrastive_weight: NonNegativeFloat = 0.5
    contrastive_temperature: PositiveFloat = 0.5
    dropout: Dropout = 0.1


def compress(frames: torch.Tensor, valid: torch.Tensor, sem: torch.Tensor, temperature: float,
             threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Semantic-guided visual sequence compression, batched.

    frames ``[N, T, D]``, valid ``[N, T]``, sem ``[N, D]`` -> (compressed ``[N, T, D]``, its
    validity ``[N, T]``), relevant frames (merged with their irrelevant neighbours) compacted left.
    """
    N, T, _ = frames.shape
    f = F.normalize(frames, dim=-1)
    logits = torch.einsum("ntd,nd->nt", f, F.normalize(sem, dim=-1)) / temperature
    w = logits.masked_fill(~valid, float("-inf")).softmax(-1).nan_to_num(0.0)  # [N, T]
    n_real = valid.sum(-1, keepdim=True).clamp(min=1)
    best = F.one_hot(w.argmax(-1), T).bool()
    relevant = valid & ((w >= threshold / n_real) | best)  # [N, T]
    sim = torch.einsum("ntd,nsd->nts", f, f).masked_fill(~relevant[:, None, :], float("-inf"))
    target = torch.where(relevant, torch.arange(T, device=frames.device).expand(N, T), sim.argmax(-1))
    assign = F.one_hot(target, T).to(frames.dtype) * valid.unsqueeze(-1).to(frames.dtype)  # [N, T(src), T(dst)]
    st = (w / w.detach().clamp(min=1e-12)).masked_fill(~valid, 0.0)  # value 1 on real frames
    merged = torch.einsum("nts,ntd->nsd", assign, frames * st.unsqueeze(-1))
    merged = merged / assign.sum(1).clamp(min=1.0).unsqueeze(-1)  # mean of each group
    order = torch.argsort((~relevant).long() * T + torch.arange(T, device=frames.device), dim=-1)
    out = torch.gather(merged, 1, order.unsqueeze(-1).expand_as(merged))
    new_valid = torch.arange(T, device=frames.device)[None, :] < relevant.sum(-1, keepdim=True)
    return out * new_valid.unsqueeze(-1).to(out.dtype), new_valid


class DeepMSI(Head):
    Config: ClassVar[type] = DeepMSIConfig
    variants: ClassVar[dict[str, dict[str, Any]]] = {
        "full": {}, "no-vsc": {"use_vsc": False}, "no-contrastive": {"use_contrastive": False},
    }

    @classmethod
    def frames_for(cls, config: Any, modalities: list[str]) -> list[str]:
        return ["video"]

    def __init__(self, config: DeepMSIConfig, inputs: HeadInputs) -> None:
        super().__init__(config, inputs)
        c = config
        if "video" not in inputs.frame_dims:
            raise UserError("deepmsi needs video frame features (select the video modality with frames)")
        self.mods = [m for m in ("text", "audio") if m in inputs.pooled_dims]
        self.frame_in = nn.Linear(inputs.frame_dims["video"], c.dim)
        self.proj = nn.ModuleDict({m: mlp(inputs.pooled_dims[m], c.dim, c.dim, c.dropout) for m in self.mods})
        if self.mods:
            self.semantic = nn.Linear(len(self.mods) * c.dim, c.dim)
        self.tcn = TCN(c.dim, tuple(c.tcn_dilations), c.tcn_kernel, c.dropout)
        self.proj_v = nn.Linear(c.dim, c.dim)
        n_in = (len(self.mods) + 1) * c.dim
        self.classifier = nn.Sequential(nn.Dropout(c.dropout), mlp(n_in, c.hidden, inputs.n_classes, c.dropout))

    def forward(self, batch: DialogueBatch) -> HeadOutput:
        """pooled text/audio ``[B, L, D_m]``, frames video ``[B, L, T, F_v]`` -> logits ``[B, L, C]``."""
        c = self.config
        if "video" not in batch.frames:
            raise UserError("deepmsi needs video frames in the batch")
        mask = batch.mask
        pres = {m: batch.present[m][mask] for m in [*self.mods, "video"] if m in batch.present}
        vec = {m: self.proj[m](batch.pooled[m][mask]) * pres[m].unsqueeze(-1).to(batch.pooled[m].dtype)
               for m in self.mods}  # [N, dim]
        fv = batch.frame_mask["video"][mask]  # [N, T]
        frames = self.frame_in(batch.frames["video"][mask])
        frames = frames * fv.unsqueeze(-1).to(frames.dtype)  # [N, T, dim]
        if c.use_vsc and self.mods:
            sem = self.semantic(torch.cat([vec[m] for m in self.mods], dim=-1))
            frames, fv = compress(frames, fv, sem, c.vsc_temperature, c.vsc_threshold)
        has_v = fv.any(-1) & pres.get("video", fv.any(-1))
        video = self.proj_v(self.tcn.last(frames, fv)) * has_v.unsqueeze(-1).to(frames.dtype)
        logits_n = self.classifier(torch.cat([*(vec[m] for m in self.mods), video], dim=-1))
        B, L = mask.shape
        logits = logits_n.new_zeros(B, L, logits_n.shape[-1])
        logits[mask] = logits_n
        aux = logits_n.sum() * 0.0
        parts: dict[str, float] = {}
        if c.use_contrastive and self.training and self.mods:
            y = batch.labels[mask]
            terms = []
            for m in self.mods:
                keep = has_v & pres[m] & (y != -100)
                if bool(keep.any()):
                    terms.append(label_aware_contrastive(video[keep], vec[m][keep], y[keep],
                                                         c.contrastive_temperature))
                    parts[f"lac_{m}"] = float(terms[-1].detach())
            if terms:
                aux = c.contrastive_weight * torch.stack(terms).sum()
        return HeadOutput(logits=logits, aux_loss=aux, parts=parts)

