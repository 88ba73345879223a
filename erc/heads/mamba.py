"""Mamba over a dialogue: a stack of selective-state-space layers on ``[B, L, D]`` with a mask.

Backend: the parameters always live in a transformers ``MambaMixer``. Without CUDA kernels the
layer runs :func:`torch_mixer_forward`: ``MambaMixer.slow_forward``'s computation (checked
against it, outputs and gradients, in ``tests/test_mamba_scan.py``) on the real positions only,
with a chunked selective scan whose backward is written by hand (:class:`_PackedScan`). On an
IEMOCAP-sized MaTAV epoch (2 CPU cores) the Mamba part went from ~3.9 s to ~0.9 s, and the scan
itself is >10x faster than autograd through a per-step loop when the cores are shared
(benchmarks/TRAIN_SPEED.md). When ``mamba_ssm`` is importable and the input is on CUDA, the
same parameters are run through ``mamba_ssm.Mamba`` (its CUDA kernels): the two modules have
identical parameter names and shapes, so a checkpoint trained with one backend loads into the
other. ``backend`` reports what the last forward used ("mamba-ssm" or "torch").

Padding: Mamba is causal (left to right) so right padding never reaches a real position. The
optional backward direction flips each sequence *within its real length* (padding stays at the
end), runs a second mixer, and flips back.
"""

from __future__ import annotations

import contextlib
import math
from typing import Iterator

import torch
from torch import nn
from transformers import MambaConfig
from transformers.models.mamba.modeling_mamba import MambaMixer
from transformers.utils import logging as hf_logging


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


def _chunks(counts: list[int], starts: list[int], per_step: int, budget: int) -> list[tuple[int, int]]:
    """Split the steps ``0..T`` into consecutive ``(t0, t1)`` ranges of at most ``budget`` state
    elements each (at least one step per range)."""
    out, t0 = [], 0
    for t in range(1, len(counts) + 1):
        if t == len(counts) or (starts[t + 1] - starts[t0]) * per_step > budget:
            out.append((t0, t))
            t0 = t
    return out


@contextlib.contextmanager
def _one_thread(on: bool) -> Iterator[None]:
    """Run the block with one intra-op thread (CPU). The scan is a long chain of small
    memory-bound steps: with several OpenMP threads each step pays a barrier, which costs more
    than it saves, and far more when other processes share the cores (measured: 1 thread was
    4x faster than 2 on a loaded 2-core machine)."""
    before = torch.get_num_threads()
    if on and before > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if on and before > 1:
            torch.set_num_threads(before)


class _PackedScan(torch.autograd.Function):
    """Mamba's selective scan on *packed* real positions, with a hand-written backward.

    Inputs are time-major packed (like a ``PackedSequence`` whose sequences are sorted by length,
    longest first): step ``t`` holds the first ``counts[t]`` sequences, so the states of step
    ``t - 1`` that step ``t`` continues are a prefix of the previous step's block.

    dt, u ``[P, E]``, Bm, Cm ``[P, N]``, A ``[E, N]`` (negative) -> y ``[P, E]`` with

        h_t = exp(dt_t A) * h_{t-1} + (dt_t u_t) B_t,   h_{-1} = 0,   y_t = h_t . C_t

    (``MambaMixer.slow_forward``'s recurrence, without the ``D`` skip and the gate).

    On CPU the cost of the naive scan is memory, not arithmetic: every ``[P, E, N]`` tensor is
    ~100 MB for a batch of 64 IEMOCAP dialogues, and each fresh allocation that large is mapped
    and zeroed page by page. So the steps are processed in chunks of at most ``CHUNK`` state
    elements (cache-sized, reused by the allocator); the forward keeps only the state entering
    each chunk, and the backward recomputes a chunk's states from it (gradient checkpointing
    per chunk), runs the adjoint recurrence backwards (the same first-order linear recurrence),
    and forms every other gradient term for the whole chunk at once.
    """

    CHUNK = 1 << 19  # state elements per chunk (2 MB in float32): measured best of 2^18..2^22 on CPU

    @staticmethod
    def _states(dt, du, Bm, A, counts, starts, t0, t1, h_in):  # noqa: ANN001, ANN205
        """``(a, h)`` for steps ``t0..t1-1``: decays and states ``[p, E, N]`` of the chunk."""
        p0, p1 = starts[t0], starts[t1]
        a = torch.exp(dt[p0:p1].unsqueeze(-1) * A)
        h = du[p0:p1].unsqueeze(-1) * Bm[p0:p1].unsqueeze(1)
        if h_in is not None:
            n = counts[t0]
            h[:n].addcmul_(a[:n], h_in[:n])
        for t in range(t0 + 1, t1):
            s, sp, n = starts[t] - p0, starts[t - 1] - p0, counts[t]
            h[s:s + n].addcmul_(a[s:s + n], h[sp:sp + n])
        return a, h

    @staticmethod
    def forward(ctx, dt, u, Bm, Cm, A, counts):  # noqa: ANN001, ANN205
        with _one_thread(not dt.is_cuda):
            return _PackedScan._forward(ctx, dt, u, Bm, Cm, A, counts)

    @staticmethod
    def backward(ctx, gy):  # noqa: ANN001, ANN205
        with _one_thread(not gy.is_cuda):
            return _PackedScan._backward(ctx, gy)

    @staticmethod
    def _forward(ctx, dt, u, Bm, Cm, A, counts):  # noqa: ANN001, ANN205
        starts = [0]
        for n in counts:
            starts.append(starts[-1] + n)
        E, N = A.shape
        chunks = _chunks(counts, starts, E * N, _PackedScan.CHUNK)
        du = dt * u
        y = dt.new_empty(dt.shape)
        h_in, entering = None, []
        for t0, t1 in chunks:
            entering.append(h_in)
            _, h = _PackedScan._states(dt, du, Bm, A, counts, starts, t0, t1, h_in)
            p0, p1 = starts[t0], starts[t1]
            torch.bmm(h, Cm[p0:p1].unsqueeze(-1), out=y[p0:p1].unsqueeze(-1))
            h_in = h[starts[t1 - 1] - p0:].clone()  # the last step's states
        ctx.save_for_backward(dt, u, Bm, Cm, A)
        ctx.counts, ctx.starts, ctx.chunks, ctx.entering = counts, starts, chunks, entering
        return y

    @staticmethod
    def _backward(ctx, gy):  # noqa: ANN001, ANN205
        dt, u, Bm, Cm, A = ctx.saved_tensors
        counts, starts = ctx.counts, ctx.starts
        gy = gy.contiguous()
        du = dt * u
        g_c, g_du, g_b = torch.empty_like(Cm), torch.empty_like(dt), torch.empty_like(Bm)
        g_dt = torch.empty_like(dt)
        g_a = torch.zeros_like(A)
        carry = None  # a_{t1} * dL/dh_{t1} for the first step t1 of the chunk after this one
        for (t0, t1), h_in in zip(reversed(ctx.chunks), reversed(ctx.entering)):
            p0, p1 = starts[t0], starts[t1]
            a, h = _PackedScan._states(dt, du, Bm, A, counts, starts, t0, t1, h_in)
            gh = gy[p0:p1].unsqueeze(-1) * Cm[p0:p1].unsqueeze(1)
            if carry is not None:
                s = starts[t1 - 1] - p0
                gh[s:s + carry.shape[0]].add_(carry)
            for t in range(t1 - 1, t0, -1):
                s, sp, n = starts[t] - p0, starts[t - 1] - p0, counts[t]
                gh[sp:sp + n].addcmul_(a[s:s + n], gh[s:s + n])
            torch.bmm(gy[p0:p1].unsqueeze(1), h, out=g_c[p0:p1].unsqueeze(1))
            torch.bmm(gh, Bm[p0:p1].unsqueeze(-1), out=g_du[p0:p1].unsqueeze(-1))
            torch.bmm(du[p0:p1].unsqueeze(1), gh, out=g_b[p0:p1].unsqueeze(1))
            # d/d(dt A) of a_t * h_{t-1}:  dL/dh_t * a_t * h_{t-1}  (h_{-1} = 0)
            g_x = gh.mul_(a)
            n0 = counts[t0]
            if h_in is None:
                g_x[:n0].zero_()
                carry = None
            else:
                carry = g_x[:n0].clone()
                g_x[:n0].mul_(h_in[:n0])
            for t in range(t0 + 1, t1):
                s, sp, n = starts[t] - p0, starts[t - 1] - p0, counts[t]
                g_x[s:s + n].mul_(h[sp:sp + n])
            g_a.add_((g_x * dt[p0:p1].unsqueeze(-1)).sum(0))
            torch.sum(g_x.mul_(A), -1, out=g_dt[p0:p1])
        g_dt.addcmul_(g_du, u)
        return g_dt, g_du * dt, g_b, g_c, g_a, None


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


def causal_depthwise_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``Conv1d(E, E, K, groups=E, padding=K-1)(x)[..., :L]`` written channels-last as K shifted
    multiply-adds: x ``[B, L, E]``, weight ``[E, 1, K]``, bias ``[E]`` -> ``[B, L, E]``.

    y[t] = bias + sum_k weight[:, 0, k] * x[t - (K - 1) + k] (zeros before the start). It needs no
    transposes. On a 2-core CPU it is as fast as ``nn.Conv1d`` in fp32 and faster under bf16 autocast:
    forward + backward at ``[64, 79, 512]`` 17-19 ms against 19-23 ms fp32, 14-19 against 23 ms bf16;
    a whole MaTAV epoch (``benchmarks/train_speed.py --heads matav``, A/B/A/B) 3.70 / 4.15 s against
    3.80 / 4.12 s fp32, 2.35 / 3.03 s against 2.60 / 3.50 s bf16.
    """
    L, K = x.shape[1], weight.shape[-1]
    xp = nn.functional.pad(x, (0, 0, K - 1, 0))  # [B, L + K - 1, E]
    w = weight[:, 0, :].t()  # [K, E]
    y = xp[:, K - 1:K - 1 + L] * w[K - 1]
    for k in range(K - 1):
        y = y + xp[:, k:k + L] * w[k]
    return y + bias if bias is not None else y


def torch_mixer_forward(mixer: MambaMixer, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``MambaMixer.slow_forward`` (no cache) on the real positions of a right-padded batch.

    The same computation at every real position (the causal conv and the recurrence never look
    right, so padding cannot reach a real position); made fast for training on CPU: the linear
    layers and the scan run on the real positions only (packed, see :func:`pack_index`) and the
    scan is :class:`_PackedScan`. x ``[B, L, D]``, mask ``[B, L]`` -> ``[B, L, D]`` (zeros at
    padding).
    """
    B, L, D = x.shape
    E, N, R = mixer.intermediate_size, mixer.ssm_state_size, mixer.time_step_rank
    idx, counts = pack_index(mask)
    if not counts:
        return x * 0.0
    xz = mixer.in_proj(_Rows.apply(x.reshape(B * L, D), idx))  # [P, 2E]
    h, gate = xz.chunk(2, dim=-1)
    h_pad = h.new_zeros(B * L, E).index_copy(0, idx, h).view(B, L, E)
    h = causal_depthwise_conv(h_pad, mixer.conv1d.weight, mixer.conv1d.bias)  # [B, L, E]
    u = mixer.act(_Rows.apply(h.reshape(B * L, E), idx))  # [P, E]: SiLU on real rows only
    dt, Bm, Cm = torch.split(mixer.x_proj(u), [R, N, N], dim=-1)
    dt = nn.functional.softplus(mixer.dt_proj(dt))  # [P, E]
    A = -torch.exp(mixer.A_log.float())  # [E, N]
    f = torch.promote_types(x.dtype, torch.float32)  # the scan in float32 at least, like slow_forward
    y = _PackedScan.apply(dt.to(f), u.to(f), Bm.to(f).contiguous(), Cm.to(f).contiguous(), A, counts)
    y = (y + u * mixer.D) * mixer.act(gate)  # [P, E]
    out = mixer.out_proj(y.to(x.dtype))  # [P, D]
    return out.new_zeros(B * L, D).index_copy(0, idx, out).view(B, L, D)


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
        self.drop = nn.Dropout(dropout)
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

    def _run(self, mixer: MambaMixer, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if x.is_cuda and mamba_ssm_available():
            self.backend = "mamba-ssm"
            return self._mamba_ssm(mixer)(x)
        self.backend = "torch"
        # MambaMixer.forward may try to fetch kernels from the Hub; run the PyTorch path ourselves.
        return torch_mixer_forward(mixer, x, mask)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        m = mask.to(x.dtype).unsqueeze(-1)
        x = x * m
        y = self._run(self.fwd, x, mask)
        if self.bwd is not None:
            y = y + flip_within(self._run(self.bwd, flip_within(x, mask), mask), mask)
        return self.norm(x + self.drop(y)) * m


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
        """"mamba-ssm" or "torch": what the last forward ran (before any forward: what it would run
        on CPU, i.e. "torch")."""
        return self.blocks[0].backend if len(self.blocks) else "torch"

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, mask)
        return x
