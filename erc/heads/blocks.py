"""Shared building blocks of the heads: projections, masked pooling, fusion layers, TCN, and the
dialogue-level sequence model (Mamba / GRU / none) behind one interface.

All sequence blocks take right-padded tensors with a boolean mask (True = real position) and
guarantee that padding never changes the outputs at real positions.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from erc.heads import cpu
from erc.heads.dropout import FastDropout


def mlp(d_in: int, d_hidden: int, d_out: int, dropout: float = 0.0, layers: int = 2) -> nn.Sequential:
    """A ``layers``-deep MLP ``d_in -> d_hidden -> ... -> d_out`` with GELU and dropout between."""
    mods: list[nn.Module] = []
    d = d_in
    for _ in range(layers - 1):
        mods += [nn.Linear(d, d_hidden), nn.GELU(), nn.Dropout(dropout)]
        d = d_hidden
    mods.append(nn.Linear(d, d_out))
    return nn.Sequential(*mods)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x [..., T, F]`` over the positions where ``mask [..., T]`` is True -> ``[..., F]``
    (zeros where no position is real)."""
    w = mask.to(x.dtype).unsqueeze(-1)
    return (x * w).sum(-2) / w.sum(-2).clamp(min=1.0)


def safe_key_mask(valid: torch.Tensor) -> torch.Tensor:
    """``key_padding_mask`` for attention from ``valid [N, T]`` (True = real): rows with no real
    key get all keys unmasked (their outputs are discarded by the caller) so no NaN appears."""
    empty = ~valid.any(-1, keepdim=True)
    return ~(valid | empty)


def sinusoidal_positions(length: int, dim: int, device: torch.device) -> torch.Tensor:
    """Fixed sinusoidal position encodings ``[length, dim]`` (no maximum length to configure)."""
    pos = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(length, dim, device=device)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq)[:, : dim // 2]
    return pe


def encoder_layer(dim: int, heads: int, dropout: float, ff_mult: int = 2) -> nn.TransformerEncoderLayer:
    """A pre-norm transformer layer on ``[N, T, dim]`` (batch first)."""
    return nn.TransformerEncoderLayer(dim, heads, dim_feedforward=ff_mult * dim, dropout=dropout,
                                      activation="gelu", batch_first=True, norm_first=True)


class FusionLayer(nn.Module):
    """A lean pre-norm transformer layer for a few tokens: ``x [N, K, D]``, ``kpm [N, K]`` (True =
    masked key) -> ``[N, K, D]``. The attention among the K tokens is
    :func:`erc.heads.cpu.token_attention` (a C kernel on CPU: PyTorch's batched products of K x K
    matrices cost more than the linear layers there)."""

    def __init__(self, dim: int, heads: int, dropout: float, ff_mult: int = 2) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.n1, self.n2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.ff = nn.Sequential(nn.Linear(dim, ff_mult * dim), nn.GELU(), nn.Dropout(dropout),
                                nn.Linear(ff_mult * dim, dim))
        self.drop = FastDropout(dropout)

    def forward(self, x: torch.Tensor, kpm: torch.Tensor) -> torch.Tensor:
        N, K, D = x.shape
        if K == 1:  # one token (one modality): softmax over one key is 1, so only v is needed
            v = F.linear(self.n1(x), self.qkv.weight[2 * D:], self.qkv.bias[2 * D:]).view(N, 1, self.heads, D // self.heads)
            att = self.drop(v.new_ones(N, 1, self.heads, 1))  # the same dropout on the attention weights
            a = (att * v).reshape(N, 1, D)
        else:
            a = cpu.token_attention(self.qkv(self.n1(x)), kpm, self.heads, self.drop)  # [N, K, D]
        x = x + self.drop(self.out(a))
        return x + self.drop(self.ff(self.n2(x)))


class TokenFusion(nn.Module):
    """Cross-attention fusion over a handful of modality tokens per utterance.

    ``forward(tokens [N, K, D], valid [N, K]) -> [N, K, D]``: ``layers`` pre-norm transformer
    layers where every modality token attends to the others (``[t || a || v]``, K <= 3); absent
    modalities are masked as keys. Cheap: attention over K tokens.
    """

    def __init__(self, dim: int, heads: int, layers: int, dropout: float, ff_mult: int = 2) -> None:
        super().__init__()
        self.layers = nn.ModuleList(FusionLayer(dim, heads, dropout, ff_mult) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)

    def forward(self, tokens: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        kpm = safe_key_mask(valid)
        x = tokens
        for layer in self.layers:
            x = layer(x, kpm)
        return self.norm(x)


class CrossAttentionLayer(nn.Module):
    """Pre-norm cross-modal attention: ``x [N, T, D]`` attends to ``ctx [N, S, D_ctx]`` (keys masked
    by ``ctx_valid [N, S]``; ``ctx_dim`` = D_ctx, default D), then a feed-forward block; both residual."""

    def __init__(self, dim: int, heads: int, dropout: float, ff_mult: int = 2, ctx_dim: int | None = None) -> None:
        super().__init__()
        ctx_dim = ctx_dim or dim
        self.nq, self.nk, self.nf = nn.LayerNorm(dim), nn.LayerNorm(ctx_dim), nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True, kdim=ctx_dim, vdim=ctx_dim)
        self.ff = nn.Sequential(nn.Linear(dim, ff_mult * dim), nn.GELU(), nn.Dropout(dropout),
                                nn.Linear(ff_mult * dim, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, ctx: torch.Tensor, ctx_valid: torch.Tensor) -> torch.Tensor:
        k = self.nk(ctx)
        a, _ = self.attn(self.nq(x), k, k, key_padding_mask=safe_key_mask(ctx_valid), need_weights=False)
        x = x + self.drop(a)
        return x + self.drop(self.ff(self.nf(x)))


class TCN(nn.Module):
    """Temporal convolutional network: residual blocks of dilated *causal* Conv1d.

    ``forward(x [N, T, D], mask [N, T]) -> [N, T, D]``. Kernel ``kernel`` (3), one block per
    dilation (1, 2, 4). Causal left padding only, so a right-padded sequence's real steps never see
    its padding. ``last(x, mask) -> [N, D]`` is the output at each sequence's last real step.
    """

    def __init__(self, dim: int, dilations: tuple[int, ...] = (1, 2, 4), kernel: int = 3,
                 dropout: float = 0.1) -> None:
        super().__init__()
        self.kernel = kernel
        self.dilations = tuple(dilations)
        self.convs = nn.ModuleList(nn.Conv1d(dim, dim, kernel, dilation=d) for d in self.dilations)
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in self.dilations)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        m = mask.to(x.dtype).unsqueeze(-1)
        x = x * m
        for conv, norm, d in zip(self.convs, self.norms, self.dilations):
            h = F.pad(x.transpose(1, 2), ((self.kernel - 1) * d, 0))
            h = F.gelu(conv(h)).transpose(1, 2)
            x = norm(x + self.drop(h)) * m
        return x

    def last(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        y = self.forward(x, mask)
        idx = (mask.long().sum(-1) - 1).clamp(min=0)
        return y[torch.arange(y.shape[0], device=y.device), idx]


class DialogueGRU(nn.Module):
    """Bidirectional GRU over a dialogue ``[B, L, D] -> [B, L, 2 * hidden]``, packed by length so that
    padding never reaches real positions (padding outputs are zeros)."""

    def __init__(self, dim: int, hidden: int, layers: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        self.gru = nn.GRU(dim, hidden, num_layers=layers, batch_first=True, bidirectional=True,
                          dropout=dropout if layers > 1 else 0.0)
        self.out_dim = 2 * hidden

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        lengths = mask.long().sum(-1).clamp(min=1).cpu()
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out, _ = self.gru(packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
        return out * mask.unsqueeze(-1).to(out.dtype)


class AttentionPool(nn.Module):
    """Additive attention pooling over a sequence of frames (e.g. an utterance's tokens).

    ``forward(x [..., T, D], mask [..., T]) -> [..., D]``: score_t = v·tanh(W x_t), softmax over
    the real frames, weighted sum. Rows without a real frame give zeros.
    """

    def __init__(self, dim: int, hidden: int = 128) -> None:
        super().__init__()
        self.score = nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Linear(hidden, 1, bias=False))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # the scoring MLP runs on the real frames only (padding is most of a padded token batch)
        real_scores = self.score(x[mask]).squeeze(-1)  # [P]
        scores = real_scores.new_full(mask.shape, float("-inf")).masked_scatter(mask, real_scores)  # [..., T]
        any_real = mask.any(-1, keepdim=True)
        weights = scores.masked_fill(~any_real, 0.0).softmax(-1) * any_real.to(x.dtype)
        return (weights.unsqueeze(-1) * x).sum(-2)


class PartyGRU(nn.Module):
    """A bidirectional GRU over each speaker's own turns (DialogueRNN's party state, simplified).

    ``forward(x [B, L, D], mask [B, L], speakers [B, L]) -> [B, L, 2 * hidden]``: the real
    utterances of each (dialogue, speaker) pair are gathered in dialogue order into one sequence,
    run through a packed BiGRU, and scattered back to their positions (zeros at padding).
    """

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.gru = DialogueGRU(dim, hidden)
        self.out_dim = self.gru.out_dim

    def forward(self, x: torch.Tensor, mask: torch.Tensor, speakers: torch.Tensor) -> torch.Tensor:
        B, L, _ = x.shape
        b, pos = mask.nonzero(as_tuple=True)  # real utterances, [N] each
        out = x.new_zeros(B, L, self.out_dim)
        if b.numel() == 0:
            return out
        spk = speakers[b, pos].clamp(min=0)
        key = b * (int(spk.max()) + 1) + spk  # one id per (dialogue, speaker)
        order = torch.argsort(key * L + pos)  # grouped by party, in dialogue order
        b, pos, key = b[order], pos[order], key[order]
        _, counts = torch.unique_consecutive(key, return_counts=True)  # turns per party, [G]
        group = torch.repeat_interleave(torch.arange(counts.numel(), device=x.device), counts)  # [N]
        step = torch.arange(b.numel(), device=x.device) - (torch.cumsum(counts, 0) - counts)[group]
        seq = x.new_zeros(counts.numel(), int(counts.max()), x.shape[-1])  # [G, T, D]
        seq[group, step] = x[b, pos]
        seq_mask = torch.zeros(seq.shape[:2], dtype=torch.bool, device=x.device)
        seq_mask[group, step] = True
        out[b, pos] = self.gru(seq, seq_mask)[group, step]
        return out


class DialogueContext(nn.Module):
    """The dialogue-level sequence model wrapper: ``kind`` is "mamba", "gru" or "none".

    ``forward(x [B, L, D], mask [B, L]) -> [B, L, D]`` (same width in and out). ``backend`` names
    what runs ("mamba-ssm", "torch+c-scan", "torch", "gru" or "none").
    """

    def __init__(self, kind: str, dim: int, layers: int = 2, bidirectional: bool = False,
                 dropout: float = 0.1) -> None:
        super().__init__()
        self.kind = kind
        if kind == "mamba":
            from erc.heads.mamba import DialogueMamba

            self.net: nn.Module = DialogueMamba(dim, layers, bidirectional=bidirectional, dropout=dropout)
        elif kind == "gru":
            self.net = DialogueGRU(dim, dim // 2 if dim % 2 == 0 else dim, layers, dropout)
            self.proj = nn.Linear(self.net.out_dim, dim) if self.net.out_dim != dim else nn.Identity()
        elif kind == "none":
            self.net = nn.Identity()
        else:
            raise ValueError(f"unknown dialogue context kind {kind!r}")

    @property
    def backend(self) -> str:
        return getattr(self.net, "backend", self.kind)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.kind == "mamba":
            return self.net(x, mask)
        if self.kind == "gru":
            return self.proj(self.net(x, mask))
        return x
