"""MaTAV: Mamba-enhanced text-audio-video alignment network (Li et al.; the paper's text is
``../shared/papers/matav.txt``), read point by point: paper / erc / why.

1. Projections. Paper: "g_q(·) and g_k(·) represent projection heads that map the corresponding
   embeddings into normalized 256-dimensional representations" (Eq. 1). erc: g_m = LayerNorm of
   the pooled vector (``input_norm``), Linear -> GELU -> Dropout -> Linear to ``dim`` = 256; the
   embedding is L2-normalised for the contrastive loss, un-normalised as the fusion token. Why
   the LayerNorm (ours): cached sentence vectors are L2-normalised (about 0.05 per component),
   smaller than the layers' initial biases, so without it the first epochs learn nothing
   (IEMOCAP dev, benchmarks/REAL_TEXT.md). The paper does not give g's depth.
2. Momentum encoders and queues. Paper: "we follow the work of MoCo, maintaining three queues to
   store the most recent M representations of text, audio, and video from the momentum unimodal
   encoders". erc: EMA copies g'_m (momentum ``momentum`` = 0.995) of the whole g_m, one queue of
   ``queue_size`` = M = 4096 keys per modality, filled after each step with that step's present,
   labelled utterances (MoCo's order). M, the momentum and the temperature are not published
   (ours; MoCo's values). At 0.995 the EMA's half-life is ~138 optimiser steps, about 20 epochs at
   IEMOCAP's ~7 steps an epoch (46 on the demo's 3), so the early queue keys come mostly from the
   random initial g_m. Measured on the demo corpus, dev only (3 seeds each, 52 dev utterances):
   dev W-F1 85.14 ± 2.70 at 0.9 and 0.99, 84.69 ± 1.80 at 0.995 (`erc train-head --model matav
   --dataset demo --seeds 3 --set momentum=...`): no difference that 52 dev utterances can show,
   so 0.995 (MoCo's) stays. Whether a faster EMA helps on IEMOCAP is unmeasured: erc's IEMOCAP
   data here are transcripts only, and with one modality there is no MEC (it needs two), so the
   momentum cannot act there; the demo is the only three-modality corpus on this machine.
3. MEC loss. Paper, Eq. 5: L_MEC = -log(exp(s(T,A')) / sum_{j=1..M} exp(s(T,A'_j))) - log(... A,V'
   ...) - log(... T,V' ...), a **sum** of three terms. erc: :func:`erc.heads.losses.mec_loss`, the
   same sum (each term averaged over the batch's utterances that have both modalities; a term
   whose pair is missing is left out), s = cosine / ``temperature`` (0.07, ours). Two details
   the paper leaves open, taken from MoCo: the positive key is in the denominator, and (ours) an
   utterance's own keys from earlier steps are removed from its negatives (M = 4096 is 79 % of
   IEMOCAP's training utterances, so its own earlier key would otherwise come back as a
   negative of itself). With one modality there is no pair and no MEC.
4. Loss. Paper: "the parameter for the MEC loss is set to 0.3". erc: loss = CE + 0.3 x L_MEC,
   0.3 multiplying the sum of the three terms (``mec_weight``).
5. Fusion. Paper: "a six-layer cross-attention mechanism", Q = W_Q[t||a||v], K = W_K[t||a||v],
   V = W_V[t||a||v] (Eq. 6-7), then "f = W_F[t||a||v]". erc: the modality tokens (+ a learned
   modality-type embedding, ours) go through ``fusion_layers`` = 6 pre-norm transformer layers,
   ``fusion_heads`` = 4 heads, attention among the present tokens, a feed-forward of
   ``fusion_ff_mult`` x ``dim`` = 1 x 256 (the paper gives no width; 1 x keeps CPU epochs short),
   dropout ``dropout``; the K tokens (zeros for an absent modality) are concatenated and merged
   by W_F (Linear K*256 -> 256).
6. FC and Mamba. Paper: "z_i = FC(f_i)", "x = [Z_1, ..., Z_n] ... is then input into the Mamba
   network". erc: z_i = Linear(Dropout(GELU(f_i))) to ``hidden`` = 256; ``mamba_layers`` = 2 Mamba
   blocks (state 16, expand 2, conv 4; ours: not published), each ``LayerNorm(x + Dropout(
   Mamba(x)))``. ``bidirectional`` (ours, on by default): a second Mamba over each dialogue
   reversed, added; the paper's Mamba is one-way, but an utterance's emotion also shows in the
   replies. IEMOCAP dev W-F1 with it: 61.39 against 60.93 one-way (seeds 0-1, this recipe; within
   the seeds' spread) and 56.5 against 51.7 (seed 0, the earlier recipe); benchmarks/REAL_TEXT.md.
7. Classifier. Paper: "y_i = argmax(Softmax(W F_i + b))". erc: Dropout -> Linear on each Mamba
   output, softmax inside the cross-entropy.
8. Regularisation (ours; the paper gives none): ``dropout`` = 0.3 in every block and
   ``input_dropout`` = 0.3 on the pooled vectors, chosen on IEMOCAP dev.
9. Optimisation. Paper: "The batch size is set to 64, and the training will run for 100 epochs.
   The learning rate is specified at 0.0001, with a weight decay of 0.00001." erc
   (``train_defaults``): AdamW with the paper's lr 1e-4, weight decay 1e-5 and 100 epochs
   (early stop after 20 epochs without a better dev W-F1, the best-dev epoch kept), but 16
   dialogues a batch, not 64: IEMOCAP's 108 training dialogues make 2 steps an epoch at 64, 200
   in a run, and dev W-F1 was still rising at epoch 100 (best epochs 78 and 100); at 16, 7 steps
   an epoch (MELD: 65). ``batch_size`` counts dialogues, as everywhere in erc.
10. Ablations (paper Tables I-II): ``no-mamba`` (no dialogue model: z_i straight to the
    classifier) and ``no-mec`` (no momentum encoders, queues or MEC term).
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
    """MaTAV's settings; the module docstring says which are the paper's and which are ours."""

    dim: Positive = 256  # width of g_m's output and of the fusion tokens (paper: 256)
    hidden: Positive = 256  # width of z_i and of the Mamba (ours)
    queue_size: Positive = 4096  # M, keys per modality queue (ours)
    momentum: UnitInterval = 0.995  # EMA of the momentum projection heads (ours)
    temperature: PositiveFloat = 0.07  # InfoNCE temperature (ours)
    fusion_layers: int = 6  # paper: six cross-attention layers
    fusion_heads: Positive = 4  # ours
    fusion_ff_mult: Positive = 1  # feed-forward width = 1 x dim in the fusion layers (ours; not published)
    mamba_layers: int = 2  # ours (not published)
    bidirectional: bool = True  # a second Mamba over each dialogue reversed (ours; the paper's is one-way)
    use_mamba: bool = True  # False: the no-mamba ablation (no dialogue context)
    use_mec: bool = True  # False: the no-mec ablation
    mec_weight: NonNegativeFloat = 0.3  # paper: loss = CE + 0.3 x L_MEC (the sum of its three terms)
    dropout: Dropout = 0.3  # in every block (ours; chosen on IEMOCAP dev)
    input_norm: bool = True  # LayerNorm of each pooled vector as g_m's first layer (ours)
    input_dropout: Dropout = 0.3  # dropout on each pooled vector before g_m (ours; chosen on IEMOCAP dev)


class MaTAV(Head):
    Config: ClassVar[type] = MaTAVConfig
    variants: ClassVar[dict[str, dict[str, Any]]] = {
        "full": {}, "no-mamba": {"use_mamba": False}, "no-mec": {"use_mec": False},
    }
    # the paper's lr, weight decay and epochs; 16 dialogues a batch instead of 64 (module docstring, 9.)
    train_defaults: ClassVar[dict[str, Any]] = {"lr": 1e-4, "weight_decay": 1e-5, "batch_size": 16, "epochs": 100}

    def __init__(self, config: MaTAVConfig, inputs: HeadInputs) -> None:
        super().__init__(config, inputs)
        c = config
        self.mods = [m for m in MODALITIES if m in inputs.pooled_dims]
        if not self.mods:
            raise UserError("matav needs at least one of text, audio, video pooled features")
        self.in_drop = nn.Dropout(c.input_dropout)
        self.proj = nn.ModuleDict({m: self._projection(inputs.pooled_dims[m]) for m in self.mods})  # g_m
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
                # the utterance (cache row) each queued key came from; -1: none (the random start)
                self.register_buffer(f"queue_ids_{m}", torch.full((c.queue_size,), -1, dtype=torch.long))
                self.register_buffer(f"queue_ptr_{m}", torch.zeros((), dtype=torch.long))

    def _projection(self, d_in: int) -> nn.Sequential:
        """g_m: ``[N, d_in] -> [N, dim]`` (optional LayerNorm, then a 2-layer MLP)."""
        c = self.config
        norm = nn.LayerNorm(d_in) if c.input_norm else nn.Identity()
        return nn.Sequential(norm, *mlp(d_in, c.dim, c.dim, c.dropout))

    @property
    def backend(self) -> str:
        """What runs the dialogue context: "mamba-ssm", "torch+c-scan" / "torch" (Mamba in PyTorch, its
        scan in C or in PyTorch) or "none"."""
        return self.context.backend

    # ---- momentum queues -------------------------------------------------------------------
    def queue(self, m: str) -> torch.Tensor:
        """Modality ``m``'s queue of momentum keys, ``[M, dim]``."""
        return getattr(self, f"queue_{m}")

    def queue_ids(self, m: str) -> torch.Tensor:
        """``[M]`` long: the utterance each of modality ``m``'s queued keys came from (-1: none)."""
        return getattr(self, f"queue_ids_{m}")

    @torch.no_grad()
    def enqueue(self, m: str, keys: torch.Tensor, ids: torch.Tensor | None = None) -> None:
        """Write ``keys [n, dim]`` (and the utterance ``ids [n]`` they came from; -1 when not given)
        into the ring buffer at the pointer (wrapping; if n > M only the last M are kept), then
        advance the pointer modulo M."""
        q = getattr(self, f"queue_{m}")
        size = q.shape[0]
        if keys.shape[0] == 0 or size == 0:
            return
        if ids is None:
            ids = torch.full((keys.shape[0],), -1, dtype=torch.long, device=q.device)
        keys, ids = keys[-size:].to(q.dtype), ids[-size:]
        ptr = getattr(self, f"queue_ptr_{m}")
        idx = (ptr + torch.arange(keys.shape[0], device=q.device)) % size
        q[idx] = keys
        self.queue_ids(m)[idx] = ids.to(torch.long)
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
        emb = {m: self.proj[m](self.in_drop(batch.pooled[m][mask])) for m in self.mods}  # real utterances [N, dim]
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
        queue_ids = {m: self.queue_ids(m) for m in self.mods}  # read in the forward only (no copy: unlike the keys, not saved for backward)
        ids = batch.index[rows] if batch.index is not None else None  # [N']: cache rows, one per utterance
        loss, n_pairs = mec_loss(q, k, queues, valid, self.config.temperature, ids=ids, queue_ids=queue_ids)
        for m in self.mods:  # enqueue after the loss (MoCo): present, real utterances only
            self.enqueue(m, k[m][valid[m]], None if ids is None else ids[valid[m]])
        if n_pairs == 0:
            return loss, {}
        return self.config.mec_weight * loss, {"mec": float(loss.detach())}
