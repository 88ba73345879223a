"""The selective scan's C kernel for CPU training (``kernels/selective_scan.c``): load, call.

Built on first use by :mod:`erc.heads.cpu.build` (system C compiler, cached under
``~/.cache/erc``). No compiler, a failed build or ``ERC_CPU_KERNELS`` without "scan":
:func:`available` is False and the Mamba runs the PyTorch scan of :mod:`erc.heads.scan` (same
results up to rounding, slower); the first failure is reported once.

Why: the scan is a long recurrence over [steps, channels, state] whose PyTorch form needs ~20
passes over ``[P, E, N]`` temporaries; the kernel keeps each state in registers. On this 2-core
CPU, one layer's scan on a 64-dialogue IEMOCAP-sized batch (P 3167, E 512, N 16) went from
54 + 100 ms (forward + backward, PyTorch) to 13 + 36 ms. Calls on disjoint sequence ranges run on
``torch.get_num_threads()`` Python threads (ctypes releases the GIL during the call). Building
takes a few seconds, once per machine.
"""

from __future__ import annotations

import ctypes

import torch

from erc.heads.cpu import build as ckernels
from erc.heads.scan import sequence_lengths

FLAGS = [*ckernels.BASE_FLAGS, "-ffast-math"]


def _declare(lib: ctypes.CDLL) -> None:
    ptr, i64 = ctypes.c_void_p, ctypes.c_int64
    for suffix in ("f32", "f64"):
        fwd = getattr(lib, f"erc_scan_fwd_{suffix}")
        fwd.argtypes = [ptr] * 7 + [i64] * 4 + [ptr]
        fwd.restype = None
        bwd = getattr(lib, f"erc_scan_bwd_{suffix}")
        bwd.argtypes = [ptr] * 8 + [i64] * 4 + [ptr] * 5
        bwd.restype = None


def _lib() -> ctypes.CDLL | None:
    return ckernels.load("scan", "selective_scan", FLAGS, _declare,
                         "the Mamba runs its PyTorch scan (same results, slower)")


def available() -> bool:
    """True when the kernel is built (or builds now) and ``ERC_CPU_KERNELS`` lets it run."""
    return _lib() is not None


def _ranges(lengths: list[int], parts: int) -> list[tuple[int, int]]:
    """Consecutive ranges of sequences (longest first) with about equal total length each."""
    total, bounds, acc, j0 = sum(lengths), [], 0, 0
    for j, n in enumerate(lengths):
        acc += n
        if len(bounds) < parts - 1 and acc >= total * (len(bounds) + 1) / parts and j + 1 < len(lengths):
            bounds.append((j0, j + 1))
            j0 = j + 1
    bounds.append((j0, len(lengths)))
    return bounds


def _p(t: torch.Tensor) -> int:
    return t.data_ptr()


def _suffix(t: torch.Tensor) -> str:
    if t.dtype == torch.float32:
        return "f32"
    if t.dtype == torch.float64:
        return "f64"
    raise TypeError(f"the C scan takes float32 or float64, not {t.dtype}")


def scan_forward(dt: torch.Tensor, u: torch.Tensor, Bm: torch.Tensor, Cm: torch.Tensor, A: torch.Tensor,
                 starts: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """y ``[P, E]`` from contiguous dt, u ``[P, E]``, Bm, Cm ``[P, N]``, A ``[E, N]`` (one dtype) and
    the layout's ``starts [T]`` / per-sequence ``lengths [J]`` (int64, longest first)."""
    lib = _lib()
    assert lib is not None
    E, N = A.shape
    At = A.t().contiguous()  # [N, E]: the kernel's lanes are consecutive channels
    y = torch.empty_like(dt)
    fn = getattr(lib, f"erc_scan_fwd_{_suffix(dt)}")
    parts = _ranges(lengths.tolist(), max(1, torch.get_num_threads()))
    ckernels.run_parallel([lambda j0=j0, j1=j1: fn(_p(dt), _p(u), _p(Bm), _p(Cm), _p(At), _p(starts), _p(lengths),
                                                   j0, j1, E, N, _p(y))
                           for j0, j1 in parts])
    return y


def scan_backward(dt: torch.Tensor, u: torch.Tensor, Bm: torch.Tensor, Cm: torch.Tensor, A: torch.Tensor,
                  gy: torch.Tensor, starts: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Gradients ``(g_dt, g_u, g_B, g_C, g_A)`` of :func:`scan_forward` for the output gradient gy."""
    lib = _lib()
    assert lib is not None
    E, N = A.shape
    At = A.t().contiguous()  # [N, E]
    g_dt, g_u = torch.empty_like(dt), torch.empty_like(u)
    g_b, g_c = torch.zeros_like(Bm), torch.zeros_like(Cm)
    parts = _ranges(lengths.tolist(), max(1, torch.get_num_threads()))
    g_at = torch.zeros(len(parts), N, E, dtype=A.dtype)  # one buffer per thread, summed below
    fn = getattr(lib, f"erc_scan_bwd_{_suffix(dt)}")
    ckernels.run_parallel([lambda i=i, j0=j0, j1=j1: fn(_p(dt), _p(u), _p(Bm), _p(Cm), _p(At), _p(gy), _p(starts),
                                                        _p(lengths), j0, j1, E, N, _p(g_dt), _p(g_u), _p(g_b),
                                                        _p(g_c), _p(g_at[i]))
                           for i, (j0, j1) in enumerate(parts)])
    return g_dt, g_u, g_b, g_c, g_at.sum(0).t()


class CScan(torch.autograd.Function):
    """:class:`erc.heads.scan.TorchScan`'s recurrence and gradients in the C kernel: same arguments
    (dt, u ``[P, E]``, Bm, Cm ``[P, N]``, A ``[E, N]``, counts: sequences alive per step), same
    result up to float rounding; float32 or float64."""

    @staticmethod
    def forward(ctx, dt, u, Bm, Cm, A, counts):  # noqa: ANN001, ANN205
        counts_t = torch.tensor(counts, dtype=torch.long)
        ctx.index = (torch.cumsum(counts_t, 0) - counts_t, sequence_lengths(counts_t))
        args = [t.contiguous() for t in (dt, u, Bm, Cm, A.to(dt.dtype))]
        ctx.save_for_backward(*args)
        ctx.a_dtype = A.dtype
        return scan_forward(*args, *ctx.index)

    @staticmethod
    def backward(ctx, gy):  # noqa: ANN001, ANN205
        g_dt, g_u, g_b, g_c, g_a = scan_backward(*ctx.saved_tensors, gy.contiguous(), *ctx.index)
        return g_dt, g_u, g_b, g_c, g_a.to(ctx.a_dtype), None
