"""DeepMSI-MER: semantic-guided visual sequence compression, TCN, label-aware contrastive loss.

Per utterance (no dialogue context). Paper (``../shared/papers/deepmsi_mer.txt``; its formulas
were lost in extraction, so each is read from the prose quoted) / erc / why, point by point:

1. Semantic vector. Paper: "we fuse the audio semantic feature with the text semantic feature to
   generate the high-level semantic feature" (fine-tuned BERT and Wav2Vec). erc: the cached text
   and audio pooled vectors, each through an MLP to ``dim`` (256), concatenated, one linear layer
   -> ``s``. Why: the encoders are frozen in erc's two stages; the fusion layer is unpublished.
2. Eq. 1. Paper: "By applying average pooling to the visual sequence in the Swin Transformer, we
   obtain the visual semantic feature [...] [F] represents the weighted sum of the high-level
   semantic feature and the visual semantic feature". erc: per frame,
   ``F = w s + (1 - w) v̄`` with v̄ the mean of that frame's projected patch tokens and
   ``w = semantic_weight`` (0.5, ours: the weights are not given); with neither text nor audio,
   ``F = v̄``.
3. Eq. 2 and the split. Paper: similarity of the broadcast F with the visual sequence, with a
   temperature, "based on the similarity sequence and the similarity threshold, the visual sequence
   is divided into relevant sequences and irrelevant sequences". erc: over the K tokens of one
   frame, ``a = softmax_k(cos(x_k, F) / vsc_temperature)``; token k is relevant when
   ``a_k >= vsc_threshold / K_real`` (the best token always is). Temperature 0.1 and threshold
   1.0 x uniform are ours (unpublished).
4. Eq. 3. Paper: "compute the similarity between [irrelevant] and [relevant], and fuse the
   information of [the irrelevant token] with the highest similarity corresponding [relevant
   token]; [...] λ is the fusion threshold; L is the length of the non-relevant sequence". erc:
   each irrelevant token i goes to its most cosine-similar relevant token r(i) when that
   similarity is at least ``fuse_threshold`` (λ, 0.0, ours), and
   ``x_r <- x_r + (1 / L) Σ_{i : r(i) = r} x_i`` with L the frame's number of irrelevant tokens;
   the relevant tokens are the compressed sequence. A straight-through factor ``a / sg(a)``
   (value 1) on the token values lets the gradient reach ``s`` through the hard selection (ours:
   the paper does not say how its selection is trained).
5. Where. Paper: the compression module sits inside the Swin ("VSC-Swin [...] adding a visual
   compression module to the original Swin-Transformer architecture, while layer normalization
   (LN) is applied"), per frame. erc: on the cached last-stage patch tokens of each frame
   (``erc extract --video deepmsi-swin``, or ``--video <swin> --set video.tokens=true``:
   Swin-tiny's 7 x 7 = 49 tokens a frame, stored ``[T * 49, D]`` with the group attribute
   ``frame_tokens``), then a LayerNorm and the mean of the kept tokens -> one vector per frame.
   Why: the Swin is frozen and run once at extraction; the layers after the compression point do
   not run on the compressed tokens. Input frames: the paper compresses *whole* frames ("by
   extracting visually relevant sequences from each frame, unnecessary background noise is
   removed"); the token path extracts whole frames by default (``video.crop=auto`` with
   ``tokens=true``), face crops only when named (``--set video.crop=face``), which would remove the
   background before the compression could learn to.
   ``vsc="frames"`` (variant ``frames``): the same compression across an utterance's frame
   vectors instead (erc's earlier reading; any per-frame cache, e.g. ``faces``), ``vsc="none"``
   (``no-vsc``): no compression, everything else kept: the same LayerNorm on every token (on
   every frame vector with a per-frame cache) and the mean, so the row measures the compression
   alone (the semantic vector ``s`` then takes no part in the video path).
6. TCN. Paper: "TCN [...] dilated convolution", 15 frames. erc: causal dilated Conv1d blocks,
   dilations 1/2/4, kernel 3, over the frame vectors; the last real step is the video vector.
   The frame count is the extraction's: 15 with the ``deepmsi-swin`` preset (the paper's), else
   ``--set video.frames=15`` (hf-video's default is 20).
7. Late fusion. Paper: "low-dimensional mapping on the original text, audio, and video features
   [...] comparing the mapped text and audio features with the video mapped features" (Eq. 5);
   loss (Eq. 7) = weighted CE + weighted contrastive loss. erc: projections to 256; loss =
   CE + ``contrastive_weight`` (0.5) x (LAC(v, t) + LAC(v, a)), LAC = :func:`label_aware_contrastive`
   (rows = video, the diagonal neither positive nor negative, temperature 0.5), training only;
   an MLP classifies ``[t; a; v]``. The weights and temperature are not in the extracted text.
8. Modality subsets (the paper's Table 3: T, A, T+V, A+V, T+A+V). erc: the head builds from
   the modalities given (``--modalities``): the semantic vector ``s`` from the text and / or audio
   present (neither: the guide is v̄ alone, item 2); without video, no frame path, no TCN and no
   contrastive term (Eq. 5 contrasts the text and audio mappings *with the video's*), the MLP
   classifies ``[t; a]``, ``[t]`` or ``[a]``. The paper does not say how its subsets were
   trained; these are ours. Video frames are loaded only when video is among the modalities.
9. Protocol: the paper's numbers are 10-fold CV over pooled utterances
   (``--folds 10 --fold-grouping utterance``, which leaks dialogue context; see
   :mod:`erc.train.folds`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal

import torch
from torch import nn
from torch.nn import functional as F

from erc.config import Checked, Dropout, NonNegativeFloat, Positive, PositiveFloat, Range, UnitInterval
from erc.errors import UserError
from erc.heads.base import DialogueBatch, Head, HeadInputs, HeadOutput
from erc.heads.blocks import TCN, masked_mean, mlp
from erc.heads.losses import label_aware_contrastive


@dataclass
class DeepMSIConfig(Checked):
    dim: Positive = 256  # projection width (paper: 256)
    hidden: Positive = 256  # MLP classifier width
    vsc: Literal["tokens", "frames", "none"] = "tokens"  # compress each frame's tokens / across frames / not
    semantic_weight: UnitInterval = 0.5  # Eq. 1: F = w s + (1 - w) v̄ (ours)
    vsc_temperature: PositiveFloat = 0.1
    vsc_threshold: NonNegativeFloat = 1.0  # relevant if softmax weight >= threshold / number of real tokens
    fuse_threshold: Annotated[float, Range(-1, 1)] = 0.0  # Eq. 3's λ: fuse an irrelevant token when its best cosine >= λ
    tcn_kernel: Positive = 3
    tcn_dilations: tuple[Positive, ...] = (1, 2, 4)
    use_contrastive: bool = True
    contrastive_weight: NonNegativeFloat = 0.5
    contrastive_temperature: PositiveFloat = 0.5
    dropout: Dropout = 0.1


def compress(x: torch.Tensor, valid: torch.Tensor, guide: torch.Tensor, temperature: float,
             threshold: float, fuse_threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Semantic-guided sequence compression (items 3-4 of the module docstring), batched.

    x ``[M, S, D]`` (M sequences of S tokens or frames), valid ``[M, S]``, guide ``[M, D]`` (Eq. 1's
    F) -> (compressed ``[M, S, D]``, validity ``[M, S]``): the relevant positions, each plus
    ``1/L`` x the irrelevant ones fused into it, compacted to the left in their order; the rest zero.
    """
    M, S, _ = x.shape
    f = F.normalize(x, dim=-1)
    logits = torch.einsum("msd,md->ms", f, F.normalize(guide, dim=-1)) / temperature
    a = logits.masked_fill(~valid, float("-inf")).softmax(-1).nan_to_num(0.0)  # [M, S]
    n_real = valid.sum(-1, keepdim=True).clamp(min=1)
    best = F.one_hot(a.argmax(-1), S).bool()
    relevant = valid & ((a >= threshold / n_real) | best)  # [M, S]
    irrelevant = valid & ~relevant
    sim = torch.einsum("msd,mrd->msr", f, f).masked_fill(~relevant[:, None, :], float("-inf"))  # [M, S(src), S(dst)]
    top, target = sim.max(-1)  # each position's most similar relevant position
    fused = irrelevant & (top >= fuse_threshold)
    st = torch.where(valid & (a > 0), a / a.detach().clamp(min=1e-30), torch.ones_like(a))  # value 1, gradient to a
    xs = x * st.unsqueeze(-1)
    n_irr = irrelevant.sum(-1, keepdim=True).clamp(min=1).to(x.dtype)  # L
    weight = fused.to(x.dtype) / n_irr  # [M, S]: 1/L for fused irrelevant positions
    assign = F.one_hot(target, S).to(x.dtype) * weight.unsqueeze(-1)  # [M, S(src), S(dst)]
    out = xs * relevant.unsqueeze(-1).to(x.dtype) + torch.einsum("msr,msd->mrd", assign, xs)
    order = torch.argsort((~relevant).long() * S + torch.arange(S, device=x.device), dim=-1)
    out = torch.gather(out, 1, order.unsqueeze(-1).expand_as(out))
    new_valid = torch.arange(S, device=x.device)[None, :] < relevant.sum(-1, keepdim=True)
    return out * new_valid.unsqueeze(-1).to(out.dtype), new_valid


class DeepMSI(Head):
    Config: ClassVar[type] = DeepMSIConfig
    variants: ClassVar[dict[str, dict[str, Any]]] = {
        "full": {}, "frames": {"vsc": "frames"}, "no-vsc": {"vsc": "none"},
        "no-contrastive": {"use_contrastive": False},
    }

    @classmethod
    def frames_for(cls, config: Any, modalities: list[str]) -> list[str]:
        return ["video"] if "video" in modalities else []

    def __init__(self, config: DeepMSIConfig, inputs: HeadInputs) -> None:
        super().__init__(config, inputs)
        c = config
        self.has_video = "video" in inputs.frame_dims
        self.mods = [m for m in ("text", "audio") if m in inputs.pooled_dims]
        if "video" in inputs.pooled_dims and not self.has_video:
            raise UserError("deepmsi reads video as frame features, and none were loaded for it")
        if not self.mods and not self.has_video:
            raise UserError("deepmsi needs at least one of text, audio or video")
        self.tokens = int(inputs.frame_tokens.get("video", 1))
        if self.has_video and c.vsc == "tokens" and self.tokens < 2:
            raise UserError("deepmsi compresses each video frame's patch tokens (the paper's VSC inside the Swin), "
                            "but this cache keeps one vector per frame: extract with `--video <hf image model> --set "
                            "video.tokens=true`, or use --variant frames (compression across frames)")
        self.proj = nn.ModuleDict({m: mlp(inputs.pooled_dims[m], c.dim, c.dim, c.dropout) for m in self.mods})
        if self.has_video:
            self.frame_in = nn.Linear(inputs.frame_dims["video"], c.dim)
            if self.mods:
                self.semantic = nn.Linear(len(self.mods) * c.dim, c.dim)
            self.vsc_norm = nn.LayerNorm(c.dim)
            self.tcn = TCN(c.dim, tuple(c.tcn_dilations), c.tcn_kernel, c.dropout)
            self.proj_v = nn.Linear(c.dim, c.dim)
        n_in = (len(self.mods) + int(self.has_video)) * c.dim
        self.classifier = nn.Sequential(nn.Dropout(c.dropout), mlp(n_in, c.hidden, inputs.n_classes, c.dropout))

    def _guide(self, sem: torch.Tensor | None, vbar: torch.Tensor) -> torch.Tensor:
        """Eq. 1: ``w s + (1 - w) v̄`` (``v̄`` alone without a semantic vector); shapes ``[..., dim]``."""
        if sem is None:
            return vbar
        w = self.config.semantic_weight
        return w * sem.expand_as(vbar) + (1.0 - w) * vbar

    def frame_vectors(self, frames: torch.Tensor, fmask: torch.Tensor,
                      sem: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """frames ``[N, R, F_v]`` (R = T * K rows, frame-major), fmask ``[N, R]``, sem ``[N, dim]`` or
        None -> (frame vectors ``[N, T', dim]``, their validity ``[N, T']``) after the compression."""
        c, K = self.config, self.tokens
        N, R, _ = frames.shape
        pad = (-R) % K
        x = self.frame_in(F.pad(frames, (0, 0, 0, pad)))
        vm = F.pad(fmask, (0, pad))
        T = x.shape[1] // K
        x, vm = x.view(N, T, K, c.dim), vm.view(N, T, K)
        valid = vm.any(-1)  # [N, T]
        if c.vsc == "tokens":
            vbar = masked_mean(x, vm)  # [N, T, dim] each frame's average-pooled tokens
            guide = self._guide(None if sem is None else sem[:, None, :], vbar)
            xc, vc = compress(x.reshape(N * T, K, c.dim), vm.reshape(N * T, K), guide.reshape(N * T, c.dim),
                              c.vsc_temperature, c.vsc_threshold, c.fuse_threshold)
            return masked_mean(self.vsc_norm(xc), vc).view(N, T, c.dim), valid  # zeros where a frame kept no token
        if c.vsc == "none" and K > 1:  # the token path without the compression: LayerNorm, then the mean
            return masked_mean(self.vsc_norm(x), vm), valid
        out = masked_mean(x, vm)  # [N, T, dim]; K = 1: the frames themselves (zeros where not valid)
        if c.vsc == "frames":
            guide = self._guide(sem, masked_mean(out, valid))
            out, valid = compress(out, valid, guide, c.vsc_temperature, c.vsc_threshold, c.fuse_threshold)
        return self.vsc_norm(out) * valid.unsqueeze(-1).to(out.dtype), valid  # LayerNorm of a zero row is not zero

    def forward(self, batch: DialogueBatch) -> HeadOutput:
        """pooled text/audio ``[B, L, D_m]``, frames video ``[B, L, T*K, F_v]`` (those the head was
        built with) -> logits ``[B, L, C]``."""
        c = self.config
        if self.has_video and "video" not in batch.frames:
            raise UserError("deepmsi was built with video and needs video frames in the batch")
        mask = batch.mask
        pres = {m: batch.present[m][mask] for m in [*self.mods, "video"] if m in batch.present}
        vec = {m: self.proj[m](batch.pooled[m][mask]) * pres[m].unsqueeze(-1).to(batch.pooled[m].dtype)
               for m in self.mods}  # [N, dim]
        features = [vec[m] for m in self.mods]
        video = has_v = None
        if self.has_video:
            sem = self.semantic(torch.cat(features, dim=-1)) if self.mods else None
            frames, fv = self.frame_vectors(batch.frames["video"][mask], batch.frame_mask["video"][mask], sem)
            has_v = fv.any(-1) & pres.get("video", fv.any(-1))
            video = self.proj_v(self.tcn.last(frames, fv)) * has_v.unsqueeze(-1).to(frames.dtype)
            features.append(video)
        logits_n = self.classifier(torch.cat(features, dim=-1))
        B, L = mask.shape
        logits = logits_n.new_zeros(B, L, logits_n.shape[-1])
        logits[mask] = logits_n
        aux = logits_n.sum() * 0.0
        parts: dict[str, float] = {}
        if c.use_contrastive and self.training and video is not None and has_v is not None:
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
