"""Optional C kernels for CPU training, behind one facade and one switch.

The models call the functions below; each runs its C kernel where it applies (CPU tensors, the
kernel built, the switch on) and PyTorch otherwise, with the same arithmetic up to float rounding
(checked in tests/test_mamba_scan.py and tests/test_token_attention.py):

- :func:`selective_scan`: the Mamba's scan on packed rows (``kernels/selective_scan.c``; PyTorch:
  :class:`erc.heads.scan.TorchScan`). Saves 11.7 % of a bf16 and 7.0 % of an fp32 MaTAV training
  epoch on this 2-core CPU.
- :func:`token_attention`: the fusion layers' attention among an utterance's few modality tokens
  (``kernels/token_attention.c``; PyTorch: einsum). Saves 5.9 % (bf16) and 7.2 % (fp32).

Measured with ``benchmarks/train_speed.py --heads matav --ab-kernels scan,attention`` (kernel on
vs off, A/B/A/B in one process). Two earlier kernels, the Mamba's softplus and a one-pass dropout,
saved less than 5 % (softplus 4.7 % bf16 / -1.3 % fp32, dropout 1.5 % / 3.9 %) and were removed.

Switch: ``ERC_CPU_KERNELS`` unset (or "1"): every kernel; "0": none, PyTorch everywhere; a comma
list such as "scan": only those. Kernels are compiled on first use with the system C compiler and
cached (:mod:`erc.heads.cpu.build`); without a compiler PyTorch runs, after one warning.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from erc.heads.cpu import attention, scan_kernel
from erc.heads.cpu.build import enabled, loaded
from erc.heads.scan import TorchScan

KERNELS = ("scan", "attention")

__all__ = ["KERNELS", "enabled", "loaded", "scan_backend", "selective_scan", "token_attention"]


def _c_scan(x: torch.Tensor) -> bool:
    return x.device.type == "cpu" and scan_kernel.available()


def selective_scan(dt: torch.Tensor, u: torch.Tensor, Bm: torch.Tensor, Cm: torch.Tensor, A: torch.Tensor,
                   counts: list[int]) -> torch.Tensor:
    """Mamba's selective scan on time-major packed rows (see :class:`erc.heads.scan.TorchScan`):
    dt, u ``[P, E]``, Bm, Cm ``[P, N]``, A ``[E, N]`` (float32 or float64), ``counts`` sequences
    alive per step -> y ``[P, E]``."""
    fn = scan_kernel.CScan if _c_scan(dt) else TorchScan
    return fn.apply(dt, u, Bm, Cm, A, counts)


def scan_backend(x: torch.Tensor) -> str:
    """What :func:`selective_scan` runs for inputs like ``x``: "torch+c-scan" or "torch"."""
    return "torch+c-scan" if _c_scan(x) else "torch"


def token_attention(qkv: torch.Tensor, kpm: torch.Tensor, heads: int, drop: nn.Module) -> torch.Tensor:
    """Multi-head attention among K tokens per item: ``qkv [N, K, 3 * D]`` (q, k, v, heads
    interleaved as ``[3, H, D / H]``), ``kpm [N, K]`` (True = masked key) -> ``[N, K, D]``, i.e.
    ``drop(softmax(q k^T / sqrt(D / H))) v`` per head. ``drop`` (a dropout module) gives the
    probability; the C kernel draws its own counter-based mask with it."""
    if attention.supports(qkv, heads):
        return attention.token_attention(qkv, kpm, heads, drop.p if drop.training else 0.0)
    N, K, D3 = qkv.shape
    D = D3 // 3
    q, k, v = qkv.view(N, K, 3, heads, D // heads).unbind(2)
    att = torch.einsum("nqhd,nkhd->nhqk", q, k) / math.sqrt(D // heads)
    att = att.masked_fill(kpm[:, None, None, :], float("-inf")).softmax(-1)
    return torch.einsum("nhqk,nkhd->nqhd", drop(att), v).reshape(N, K, D)
