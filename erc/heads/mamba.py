"""Mamba over a dialogue: a stack of selective-state-space layers on ``[B, L, D]`` with a mask.

Backend: the parameters always live in a transformers ``MambaMixer``. Without CUDA kernels the
layers run :func:`packed_mixer_forward`: ``MambaMixer.slow_forward``'s computation (checked
against it, outputs and gradients, in ``tests/test_mamba_scan.py``) on the real positions only,
packed once per forward (:class:`PackedLayout`), with a packed causal conv and a selective scan
whose backward is written by hand (:func:`erc.heads.cpu.selective_scan`: the C kernel where it
builds, else the chunked PyTorch scan of :mod:`erc.heads.scan`). When ``mamba_ssm`` is importable and the input is on CUDA,
the same parameters are run through ``mamba_ssm.Mamba`` (its CUDA kernels): the two modules have
identical parameter names and shapes, so a checkpoint trained with one backend loads into the
other. ``backend`` reports what the last forward used ("mamba-ssm", "torch+c-scan" or "torch").
Timings: benchmarks/TRAIN_SPEED.md.

Padding: Mamba is causal (left to right) so right padding never reaches a real position. The
optional backward direction flips each sequence *within its real length* (padding stays at the
end), runs a second mixer, and flips back.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn
from transformers import MambaConfig
from transformers.models.mamba.modeling_mamba import MambaMixer
from transformers.utils import logging as hf_logging

from erc.heads import cpu
from erc.heads.dropout import FastDropout
from erc.heads.scan import sequence_lengths


def mamba_ssm_available() -> bool:
    """True when the optional ``mamba_ssm`` package (CUDA kernels) imports."""
    try:
        import mamba_ssm  # noqa: F401
    except Exception:  # noqa: BLE001 - any import failure means "not available"
        return False
    return True


def flip_within(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Reverse each sequence of ``x [B, L, ...]`` inside its real length (``mask [B, L]``, right
    padded); padding positions stay in place. The operation is its own inverse."""
    B, L = mask.shape
    lengths = mask.long().sum(-1, keepdim=True)  # [B, 1]
    pos = torch.arange(L, device=x.device).expand(B, L)
    idx = torch.where(pos < lengths, lengths - 1 - pos, pos)  # [B, L]
    idx = idx.view(B, L, *([1] * (x.dim() - 2))).expand_as(x)
    return torch.gather(x, 1, idx)


def _init_dt(mixer: MambaMixer, dt_min: float = 1e-3, dt_max: float = 0.1, floor: float = 1e-4) -> None:
    """Mamba's time-step initialisation (transformers only applies it through its PreTrainedModel)."""
    std = mixer.time_step_rank ** -0.5
    nn.init.uniform_(mixer.dt_proj.weight, -std, std)
    dt = torch.exp(torch.rand(mixer.intermediate_size) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
    dt = dt.clamp(min=floor)
    with torch.no_grad():
        mixer.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))


class _Rows(torch.autograd.Function):
    """``x[idx]`` for *distinct* row indices: the backward is a copy into zeros (``index_copy``)
    instead of ``index_select``'s accumulating ``index_add``, which is slow on CPU."""

    @staticmethod
    def forward(ctx, x, idx):  # noqa: ANN001, ANN205
        ctx.save_for_backward(idx)
        ctx.rows = x.shape[0]
        return x.index_select(0, idx)

    @staticmethod
    def backward(ctx, g):  # noqa: ANN001, ANN205
        (idx,) = ctx.saved_tensors
        return g.new_zeros(ctx.rows, *g.shape[1:]).index_copy_(0, idx, g), None


def pack_index(mask: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    """Rows of the real positions of ``mask [B, L]`` (right padded) in the flattened ``[B * L]``,
    time-major with the sequences sorted by length (longest first, stable), and the number of
    sequences alive at each step."""
    B, L = mask.shape
    lengths = mask.long().sum(-1)
    order = torch.sort(lengths, descending=True, stable=True).indices
    alive = mask[order].t()  # [L, B]: a prefix of each row is True
    flat = order.unsqueeze(0) * L + torch.arange(L, device=mask.device).unsqueeze(1)  # [L, B]
    counts = alive.sum(-1)
    counts = [int(c) for c in counts.tolist() if c > 0]
    return flat[alive], counts


class PackedLayout:
    """The real positions of a right-padded batch ``mask [B, L]``, packed time-major.

    Row ``r`` of a packed ``[P, ...]`` tensor is step ``t`` of the ``j``-th longest sequence, with
    ``r = starts[t] + j`` (:func:`pack_index`): a shift by ``s`` steps within a sequence is the row
    ``starts[t - s] + j``, a gather. Built once per forward and shared by every layer and
    direction. ``idx [P]``: the rows in the flattened ``[B * L]``; ``counts``: sequences alive
    per step.
    """

    def __init__(self, mask: torch.Tensor) -> None:
        self.shape = tuple(mask.shape)
        self.idx, self.counts = pack_index(mask)
        dev = mask.device
        self.P = int(self.idx.numel())
        counts = torch.tensor(self.counts, dtype=torch.long, device=dev)
        self.starts = torch.cumsum(counts, 0) - counts  # [T]
        self.step = torch.repeat_interleave(torch.arange(len(self.counts), device=dev), counts)  # [P]
        self.rank = torch.arange(self.P, device=dev) - self.starts[self.step]  # [P]: j
        self._counts_t, self._shifts = counts, {}
        self._reverse: torch.Tensor | None = None

    def shifted(self, s: int) -> torch.Tensor:
        """``[P]`` row of the same sequence ``s`` steps earlier (``s < 0``: later), or ``P`` (a
        zero row appended by the caller) where that step does not exist."""
        if s not in self._shifts:
            t = self.step - s
            T = len(self.counts)
            ok = (t >= 0) & (t < T)
            tc = t.clamp(0, T - 1)
            ok &= self.rank < self._counts_t[tc]
            self._shifts[s] = torch.where(ok, self.starts[tc] + self.rank, torch.full_like(t, self.P))
        return self._shifts[s]

    @property
    def reverse(self) -> torch.Tensor:
        """``[P]`` permutation that reverses every sequence within its length (an involution)."""
        if self._reverse is None:
            length = sequence_lengths(self._counts_t)[self.rank]  # [P]: the length of each row's sequence
            self._reverse = self.starts[length - 1 - self.step] + self.rank
        return self._reverse

    def pack(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, L, ...]`` -> ``[P, ...]`` (gradient: a copy back, see :class:`_Rows`)."""
        return _Rows.apply(x.reshape(self.shape[0] * self.shape[1], *x.shape[2:]), self.idx)

    def unpack(self, y: torch.Tensor) -> torch.Tensor:
        """``y [P, ...]`` -> ``[B, L, ...]`` with zeros at padding."""
        B, L = self.shape
        return y.new_zeros(B * L, *y.shape[1:]).index_copy(0, self.idx, y).view(B, L, *y.shape[1:])


class _PackedCausalConv(torch.autograd.Function):
    """Mamba's depthwise causal convolution on packed rows: x ``[P, E]``, weight ``[E, 1, K]``,
    bias ``[E]`` -> ``[P, E]`` in float32 (at least), with

        y[t] = bias + sum_k weight[:, 0, k] * x[t - (K - 1) + k]   (zeros before a sequence starts)

    i.e. ``Conv1d(E, E, K, groups=E, padding=K-1)`` per sequence. The shifts are gathers through
    :meth:`PackedLayout.shifted` (a zero row stands for "before the start"), so nothing is
    scattered into a padded ``[B, L, E]``: on a 2-core CPU that round trip, in mixed bf16 / fp32
    under autocast, cost more than the rest of the Mamba's elementwise work.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, layout):  # noqa: ANN001, ANN205
        ctx.dtypes = (x.dtype, weight.dtype)
        f = torch.promote_types(x.dtype, weight.dtype)
        x = x.to(f)
        K = weight.shape[-1]
        w = weight[:, 0, :].t().to(f)  # [K, E]
        x_ext = torch.cat([x, x.new_zeros(1, x.shape[1])])  # [P + 1, E]
        y = x * w[K - 1]
        if bias is not None:
            y.add_(bias.to(f))
        for s in range(1, K):
            y.addcmul_(x_ext.index_select(0, layout.shifted(s)), w[K - 1 - s])
        ctx.save_for_backward(x_ext, w)
        ctx.layout, ctx.has_bias = layout, bias is not None
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gy):  # noqa: ANN001, ANN205
        x_ext, w = ctx.saved_tensors
        layout, K = ctx.layout, w.shape[0]
        gy = gy.to(w.dtype).contiguous()
        x = x_ext[:-1]
        gy_ext = torch.cat([gy, gy.new_zeros(1, gy.shape[1])])
        gx = gy * w[K - 1]
        gw = torch.empty_like(w)  # [K, E]
        gw[K - 1] = (gy * x).sum(0)
        for s in range(1, K):
            gx.addcmul_(gy_ext.index_select(0, layout.shifted(-s)), w[K - 1 - s])
            gw[K - 1 - s] = (gy * x_ext.index_select(0, layout.shifted(s))).sum(0)
        g_bias = gy.sum(0) if ctx.has_bias else None
        return gx.to(ctx.dtypes[0]), gw.t().unsqueeze(1).to(ctx.dtypes[1]), g_bias, None


def packed_mixer_forward(mixer: MambaMixer, x: torch.Tensor, layout: PackedLayout) -> torch.Tensor:
    """``MambaMixer.slow_forward`` (no cache) on packed real positions: x ``[P, D]`` -> ``[P, D]``.

    The same computation at every real position (the causal conv and the recurrence never look
    right, so padding cannot reach a real position); made fast for training on CPU: every layer
    runs on the real rows only (about half of a padded IEMOCAP batch), the conv is
    :class:`_PackedCausalConv` and the scan :func:`erc.heads.cpu.selective_scan`.
    """
    N, R = mixer.ssm_state_size, mixer.time_step_rank
    h, gate = mixer.in_proj(x).chunk(2, dim=-1)  # [P, E] each
    u = mixer.act(_PackedCausalConv.apply(h, mixer.conv1d.weight, mixer.conv1d.bias, layout))  # [P, E]
    dt, Bm, Cm = torch.split(mixer.x_proj(u), [R, N, N], dim=-1)
    dt = mixer.dt_proj(dt)  # [P, E]
    f = torch.promote_types(x.dtype, torch.float32)  # the scan in float32 at least, like slow_forward
    dt = nn.functional.softplus(dt)
    A = -torch.exp(mixer.A_log.float())  # [E, N]
    y = cpu.selective_scan(dt.to(f), u.to(f), Bm.to(f).contiguous(), Cm.to(f).contiguous(), A, layout.counts)
    y = (y + u * mixer.D) * mixer.act(gate)  # [P, E]
    return mixer.out_proj(y.to(x.dtype))  # [P, D]


def on_real_rows(x: torch.Tensor, mask: torch.Tensor,
                 fn: Callable[[torch.Tensor, PackedLayout], torch.Tensor]) -> torch.Tensor:
    """``fn(packed [P, D], layout) -> [P, D]`` run on the real positions of a right-padded batch:
    x ``[B, L, D]``, mask ``[B, L]`` -> ``[B, L, D]`` (zeros at padding)."""
    layout = PackedLayout(mask)
    if layout.P == 0:
        return x * 0.0
    return layout.unpack(fn(layout.pack(x), layout))


def torch_mixer_forward(mixer: MambaMixer, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """:func:`packed_mixer_forward` on a right-padded batch: x ``[B, L, D]``, mask ``[B, L]`` ->
    ``[B, L, D]`` (zeros at padding)."""
    return on_real_rows(x, mask, lambda h, layout: packed_mixer_forward(mixer, h, layout))


def _mixer(cfg: MambaConfig, layer_idx: int) -> MambaMixer:
    """A MambaMixer with Mamba's dt init, built without transformers' "fast path" warning (we pick
    the backend ourselves)."""
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        mixer = MambaMixer(cfg, layer_idx=layer_idx)
    finally:
        hf_logging.set_verbosity(verbosity)
    _init_dt(mixer)
    return mixer


class MambaBlock(nn.Module):
    """One layer: ``x + Dropout(Mamba(x) [+ flip(Mamba_b(flip(x)))])`` then LayerNorm.

    ``forward(x [B, L, D], mask [B, L]) -> [B, L, D]``; padding outputs are zeroed.
    """

    def __init__(self, dim: int, state_size: int = 16, expand: int = 2, conv_kernel: int = 4,
                 bidirectional: bool = False, dropout: float = 0.1, layer_idx: int = 0) -> None:
        super().__init__()
        cfg = MambaConfig(hidden_size=dim, state_size=state_size, expand=expand, conv_kernel=conv_kernel,
                          num_hidden_layers=1, use_bias=False, use_conv_bias=True, use_mambapy=False)
        self.fwd = _mixer(cfg, layer_idx)
        self.bwd = _mixer(cfg, layer_idx) if bidirectional else None
        self.norm = nn.LayerNorm(dim)
        self.drop = FastDropout(dropout)
        self.shape = dict(d_model=dim, d_state=state_size, d_conv=conv_kernel, expand=expand)
        self._fast: dict[int, nn.Module] = {}  # id(mixer) -> mamba_ssm.Mamba sharing its parameters
        self.backend = "torch"

    def _mamba_ssm(self, mixer: MambaMixer) -> nn.Module:
        """A ``mamba_ssm.Mamba`` whose parameters *are* ``mixer``'s (kept out of the state dict)."""
        key = id(mixer)
        if key not in self._fast:
            from mamba_ssm import Mamba

            m = Mamba(**self.shape, device=mixer.A_log.device)
            for name in ("in_proj", "conv1d", "x_proj", "dt_proj", "out_proj"):
                setattr(m, name, getattr(mixer, name))
            m.A_log, m.D = mixer.A_log, mixer.D
            self._fast[key] = m
        return self._fast[key]

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Padded: x ``[B, L, D]``, mask ``[B, L]`` -> ``[B, L, D]`` (zeros at padding). Off the
        mamba-ssm path this packs the batch and runs :meth:`forward_packed` (MambaMixer.forward
        itself may try to fetch kernels from the Hub, so the PyTorch path is always ours)."""
        if not (x.is_cuda and mamba_ssm_available()):
            return on_real_rows(x, mask, self.forward_packed)
        self.backend = "mamba-ssm"
        m = mask.to(x.dtype).unsqueeze(-1)
        x = x * m
        y = self._mamba_ssm(self.fwd)(x)
        if self.bwd is not None:
            y = y + flip_within(self._mamba_ssm(self.bwd)(flip_within(x, mask)), mask)
        return self.norm(x + self.drop(y)) * m

    def forward_packed(self, x: torch.Tensor, layout: PackedLayout) -> torch.Tensor:
        """The same layer on packed real rows (PyTorch path): x ``[P, D]`` -> ``[P, D]``."""
        self.backend = cpu.scan_backend(x)
        y = packed_mixer_forward(self.fwd, x, layout)
        if self.bwd is not None:
            rev = layout.reverse
            y = y + _Rows.apply(packed_mixer_forward(self.bwd, _Rows.apply(x, rev), layout), rev)
        return self.norm(x + self.drop(y))


class DialogueMamba(nn.Module):
    """A stack of ``layers`` :class:`MambaBlock` over ``[B, L, D]`` with mask ``[B, L]``.

    Mamba size (ours; the paper does not publish it): state 16, expand 2, conv kernel 4.
    """

    def __init__(self, dim: int, layers: int = 2, bidirectional: bool = False, dropout: float = 0.1,
                 state_size: int = 16, expand: int = 2, conv_kernel: int = 4) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            MambaBlock(dim, state_size, expand, conv_kernel, bidirectional, dropout, layer_idx=i)
            for i in range(layers)
        )

    @property
    def backend(self) -> str:
        """"mamba-ssm", "torch+c-scan" or "torch": what the last forward ran (before any forward:
        "torch")."""
        return self.blocks[0].backend if len(self.blocks) else "torch"

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x ``[B, L, D]``, mask ``[B, L]`` -> ``[B, L, D]`` (zeros at padding). On the PyTorch path
        the batch is packed once (:class:`PackedLayout`) and every layer runs on the real rows."""
        if not len(self.blocks):
            return x * mask.to(x.dtype).unsqueeze(-1)
        if x.is_cuda and mamba_ssm_available():  # mamba-ssm's kernels take the padded batch
            for block in self.blocks:
                x = block(x, mask)
            return x
        return on_real_rows(x, mask, self._forward_packed)

    def _forward_packed(self, h: torch.Tensor, layout: PackedLayout) -> torch.Tensor:
        """Every layer on the packed real rows ``h [P, D]`` -> ``[P, D]``."""
        for block in self.blocks:
            h = block.forward_packed(h, layout)
        return h
