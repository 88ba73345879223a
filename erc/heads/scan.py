"""Mamba's selective scan on packed real positions, in PyTorch, with a hand-written backward.

:class:`TorchScan` is the reference the C kernel (:mod:`erc.heads.cpu.scan_kernel`) is checked against and
the path that runs where the kernel does not (no C compiler, ``ERC_CPU_KERNELS=0``, GPU tensors);
:func:`erc.heads.cpu.selective_scan` picks between them.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch


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


def sequence_lengths(counts: torch.Tensor) -> torch.Tensor:
    """Per-sequence lengths ``[J]`` (longest first) from the sequences alive per step ``[T]``
    (non-increasing): sequence j is alive at the steps whose count exceeds j."""
    j = torch.arange(int(counts[0]) if counts.numel() else 0, dtype=counts.dtype, device=counts.device)
    return torch.searchsorted(-counts, -j, right=False)


class TorchScan(torch.autograd.Function):
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
            return TorchScan._forward(ctx, dt, u, Bm, Cm, A, counts)

    @staticmethod
    def backward(ctx, gy):  # noqa: ANN001, ANN205
        with _one_thread(not gy.is_cuda):
            return TorchScan._backward(ctx, gy)

    @staticmethod
    def _forward(ctx, dt, u, Bm, Cm, A, counts):  # noqa: ANN001, ANN205
        starts = [0]
        for n in counts:
            starts.append(starts[-1] + n)
        E, N = A.shape
        chunks = _chunks(counts, starts, E * N, TorchScan.CHUNK)
        du = dt * u
        y = dt.new_empty(dt.shape)
        h_in, entering = None, []
        for t0, t1 in chunks:
            entering.append(h_in)
            _, h = TorchScan._states(dt, du, Bm, A, counts, starts, t0, t1, h_in)
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
            a, h = TorchScan._states(dt, du, Bm, A, counts, starts, t0, t1, h_in)
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
