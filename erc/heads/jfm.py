"""JFM + ICL: joint-vector cross-modal fusion of text tokens and log-mel patches, with a
supervised inter-class contrastive loss. Utterance level (no dialogue context).

Text: token frames ``[T, F_t]`` -> linear -> [CLS] + sinusoidal positions -> 2-layer transformer
(the feature extractor). Audio: mel frames ``[T, F_a]`` cut into patches of ``patch_len`` frames
along time, linearly embedded, [CLS] + positions. Then ``blocks`` (N = 2) joint-fusion blocks:

    [F_a ; J_a] -> audio layer -> F_a, J_a'        [F_t ; J_t] -> text layer -> F_t, J_t'
    [F_t ; MLP_a→t(J_a')] -> text layer -> F_t     [F_a ; MLP_t→a(J_t')] -> audio layer -> F_a

(J_* learned joint vectors of length ``joint_len`` = 4, one set per side and block). CLS outputs
-> one linear classifier per side, logits averaged; aux loss = SupCon (ICL) on the concatenated
CLS features. Switches: ``fusion`` = jfm | late (no exchange, no-jfm) | cfa (cross-modal attention
in place of the joint-vector exchange) | concat (no exchange, one classifier on the concatenation);
``joint_len`` = 0 exchanges the other side's CLS instead of joint vectors (no-joint-vector).
Unpublished (ours): width 256, 4 heads, patch 16 frames, ICL weight 0.1, temperature 0.1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from erc.config import Checked, Dropout, NonNegativeFloat, Positive, PositiveFloat
from erc.errors import UserError
from erc.heads.base import DialogueBatch, Head, HeadInputs, HeadOutput
from erc.heads.blocks import CrossAttentionLayer, encoder_layer, mlp, safe_key_mask, sinusoidal_positions
from erc.heads.losses import supcon_loss

SIDES = ("text", "audio")


@dataclass
class JFMConfig(Checked):
    dim: Positive = 256
    heads: Positive = 4
    text_layers: int = 2  # transformer feature extractor over the text tokens
    blocks: int = 2  # N joint-fusion blocks
    joint_len: int = 4  # 0: exchange the CLS token instead of joint vectors
    patch_len: Positive = 16  # mel frames per audio patch
    fusion: Literal["jfm", "late", "cfa", "concat"] = "jfm"
    use_icl: bool = True
    icl_weight: NonNegativeFloat = 0.1
    icl_temperature: PositiveFloat = 0.1
    dropout: Dropout = 0.1


class _Side(nn.Module):
    """One stream's layers: input embedding, CLS, per-block self and exchange layers."""

    def __init__(self, d_in: int, c: JFMConfig, extractor_layers: int) -> None:
        super().__init__()
        self.embed = nn.Linear(d_in, c.dim)
        self.cls = nn.Parameter(torch.randn(1, 1, c.dim) * 0.02)
        self.extractor = nn.ModuleList(encoder_layer(c.dim, c.heads, c.dropout) for _ in range(extractor_layers))
        self.self_layers = nn.ModuleList(encoder_layer(c.dim, c.heads, c.dropout) for _ in range(c.blocks))
        if c.fusion == "jfm" and c.joint_len > 0:
            self.joint = nn.Parameter(torch.randn(c.blocks, c.joint_len, c.dim) * 0.02)
        if c.fusion == "jfm":  # layer over [F ; MLP(other side's joint vectors)]
            self.cross = nn.ModuleList(encoder_layer(c.dim, c.heads, c.dropout) for _ in range(c.blocks))
            self.bridge = nn.ModuleList(mlp(c.dim, c.dim, c.dim, c.dropout) for _ in range(c.blocks))
        elif c.fusion == "cfa":
            self.cross = nn.ModuleList(CrossAttentionLayer(c.dim, c.heads, c.dropout) for _ in range(c.blocks))
        self.norm = nn.LayerNorm(c.dim)

    def start(self, x: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x [N, T, d_in]`` -> ``[N, 1 + T, dim]`` ([CLS] first) and its validity ``[N, 1 + T]``."""
        h = self.embed(x) + sinusoidal_positions(x.shape[1], self.cls.shape[-1], x.device)
        h = torch.cat([self.cls.expand(x.shape[0], -1, -1), h], dim=1)
        valid = torch.cat([valid.new_ones(x.shape[0], 1), valid], dim=1)
        for layer in self.extractor:
            h = layer(h, src_key_padding_mask=~valid)
        return h, valid


def _layer_with(layer: nn.Module, h: torch.Tensor, valid: torch.Tensor, extra: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``layer`` over ``[h ; extra]`` (extra tokens always valid); return (h part, extra part)."""
    x = torch.cat([h, extra], dim=1)
    v = torch.cat([valid, valid.new_ones(extra.shape[:2])], dim=1)
    y = layer(x, src_key_padding_mask=~v)
    return y[:, : h.shape[1]], y[:, h.shape[1]:]


class JFM(Head):
    Config: ClassVar[type] = JFMConfig
    variants: ClassVar[dict[str, dict[str, Any]]] = {
        "full": {}, "no-jfm": {"fusion": "late"}, "no-joint-vector": {"joint_len": 0},
        "no-icl": {"use_icl": False}, "cfa": {"fusion": "cfa"}, "concat": {"fusion": "concat"},
    }

    @classmethod
    def frames_for(cls, config: Any, modalities: list[str]) -> list[str]:
        return [m for m in SIDES if m in modalities]

    def __init__(self, config: JFMConfig, inputs: HeadInputs) -> None:
        super().__init__(config, inputs)
        c = config
        self.sides = [m for m in SIDES if m in inputs.frame_dims]
        if not self.sides:
            raise UserError("jfm needs text token frames and/or audio (mel) frames")
        d_in = {"text": inputs.frame_dims.get("text", 0), "audio": inputs.frame_dims.get("audio", 0) * c.patch_len}
        self.side = nn.ModuleDict({m: _Side(d_in[m], c, c.text_layers if m == "text" else 0) for m in self.sides})
        self.exchange = c.fusion in ("jfm", "cfa") and len(self.sides) == 2
        if c.fusion == "concat" and len(self.sides) == 2:
            self.classifier = nn.ModuleDict({"concat": nn.Linear(2 * c.dim, inputs.n_classes)})
        else:
            self.classifier = nn.ModuleDict({m: nn.Linear(c.dim, inputs.n_classes) for m in self.sides})
        self.drop = nn.Dropout(c.dropout)

    def representation_module(self) -> nn.Module:
        """``drop``, applied to each side's normalised CLS vector ``[N, dim]``: the representation is
        the sides' CLS vectors concatenated ``[N, sides x dim]`` (what the classifiers read)."""
        return self.drop

    def _inputs(self, batch: DialogueBatch, m: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Frames of the real utterances: ``[N, T, F]`` (text) or patches ``[N, T/p, p F]`` (audio)."""
        if m not in batch.frames:
            raise UserError(f"jfm needs {m} frames in the batch")
        fm = batch.frame_mask[m][batch.mask]  # [N, T]
        x = batch.frames[m][batch.mask] * fm.unsqueeze(-1).to(batch.frames[m].dtype)
        if m == "audio":
            p = self.config.patch_len
            N, T, F = x.shape
            pad = (-T) % p
            x = nn.functional.pad(x, (0, 0, 0, pad)).view(N, (T + pad) // p, p * F)
            fm = nn.functional.pad(fm, (0, pad)).view(N, (T + pad) // p, p).any(-1)
        return x, fm

    def _fuse(self, h: dict[str, torch.Tensor], v: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        c = self.config
        for i in range(c.blocks):
            joint = {}
            for m in self.sides:  # self layers over [F ; J] (or plain F without joint vectors)
                s = self.side[m]
                if self.exchange and c.fusion == "jfm" and c.joint_len > 0:
                    h[m], joint[m] = _layer_with(s.self_layers[i], h[m], v[m],
                                                 s.joint[i].expand(h[m].shape[0], -1, -1))
                else:
                    h[m] = s.self_layers[i](h[m], src_key_padding_mask=safe_key_mask(v[m]))
                    joint[m] = h[m][:, :1]  # CLS stands in when there are no joint vectors
            if not self.exchange:
                continue
            new = {}
            for m, o in (("text", "audio"), ("audio", "text")):
                s = self.side[m]
                if c.fusion == "jfm":
                    new[m], _ = _layer_with(s.cross[i], h[m], v[m], s.bridge[i](joint[o]))
                else:  # cfa: cross-modal attention to the other side's sequence
                    new[m] = s.cross[i](h[m], h[o], v[o])
            h = new
        return h

    def forward(self, batch: DialogueBatch) -> HeadOutput:
        """frames text ``[B, L, T, F_t]`` / audio ``[B, L, T, F_a]`` -> logits ``[B, L, C]``."""
        mask = batch.mask
        h, v = {}, {}
        for m in self.sides:
            x, fm = self._inputs(batch, m)
            h[m], v[m] = self.side[m].start(x, fm)
        h = self._fuse(h, v)
        cls = {m: self.drop(self.side[m].norm(h[m][:, 0])) for m in self.sides}  # [N, dim]
        pres = {m: batch.present[m][mask].to(cls[m].dtype).unsqueeze(-1) if m in batch.present
                else torch.ones_like(cls[m][:, :1]) for m in self.sides}
        if "concat" in self.classifier:
            feats = torch.cat([cls[m] * pres[m] for m in self.sides], dim=-1)
            logits_n = self.classifier["concat"](feats)
        else:
            num = sum(self.classifier[m](cls[m]) * pres[m] for m in self.sides)
            den = sum(pres[m] for m in self.sides).clamp(min=1.0)
            logits_n = num / den
            feats = torch.cat([cls[m] * pres[m] for m in self.sides], dim=-1)
        B, L = mask.shape
        logits = logits_n.new_zeros(B, L, logits_n.shape[-1])
        logits[mask] = logits_n
        aux = logits_n.sum() * 0.0
        parts: dict[str, float] = {}
        if self.config.use_icl and self.training:
            y = batch.labels[mask]
            keep = y != -100
            icl = supcon_loss(feats[keep], y[keep], self.config.icl_temperature)
            aux = self.config.icl_weight * icl
            parts["icl"] = float(icl.detach())
        return HeadOutput(logits=logits, aux_loss=aux, parts=parts)
