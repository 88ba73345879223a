"""Attention among a few tokens per item on CPU: the C kernel ``kernels/token_attention.c``.

:func:`token_attention` ``(qkv [N, K, 3 * D], kpm [N, K], heads, p)`` -> ``[N, K, D]`` is the
multi-head attention of :class:`erc.heads.blocks.FusionLayer` (K modality tokens per utterance,
keys masked where ``kpm`` is True, dropout p on the attention weights), as an autograd function.
The attention-weight dropout is a counter-based mask (``kernels/erc_common.h``): a hash of a
per-call key and the flat index of the ``[N, H, K, K]`` weights, never stored (the backward
recomputes it); the key is drawn from PyTorch's generator, so ``torch.manual_seed`` repeats it.

Why: PyTorch runs this as batched matrix products of 3 x 64 by 64 x 3 matrices, ~12,700 of them
per fusion layer on a 64-dialogue IEMOCAP batch, which cost 17-20 ms (bf16) and ~82 ms (float32)
per layer forward + backward on this CPU for ~15 MFLOP of work. Built by
:mod:`erc.heads.cpu.build`; ``ERC_CPU_KERNELS`` without "attention" (or no C compiler) keeps the
PyTorch path.
"""

from __future__ import annotations

import ctypes

import torch

from erc.heads.cpu import build as ckernels
from erc.heads.dropout import keep_cut

FLAGS = list(ckernels.BASE_FLAGS)  # no -ffast-math: masked keys are -inf before the softmax
MAX_TOKENS = 8  # as in the kernel
_NAMES = ckernels.DTYPE_NAMES


def _declare(lib: ctypes.CDLL) -> None:
    ptr, i64, u64, u32, f32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_uint64, ctypes.c_uint32, ctypes.c_float
    for t in _NAMES.values():
        fwd = getattr(lib, f"erc_token_attention_fwd_{t}")
        fwd.argtypes = [ptr, ptr, i64, i64, i64, i64, u64, u32, f32, ptr, ptr]
        fwd.restype = None
        bwd = getattr(lib, f"erc_token_attention_bwd_{t}")
        bwd.argtypes = [ptr, ptr, ptr, i64, i64, i64, i64, u64, u32, f32, ptr]
        bwd.restype = None


def _lib() -> ctypes.CDLL | None:
    return ckernels.load("attention", "token_attention", FLAGS, _declare,
                         "the fusion's attention runs in PyTorch (slower)")


def draw_key() -> int:
    """A dropout key from PyTorch's default CPU generator (so `torch.manual_seed` repeats masks)."""
    return int(torch.randint(0, 2 ** 62, (), dtype=torch.int64).item())


def supports(qkv: torch.Tensor, heads: int) -> bool:
    """Whether the kernel takes ``qkv [N, K, 3 * D]`` with ``heads`` heads (CPU, float32 / bf16,
    at most 8 tokens) and is available."""
    if qkv.device.type != "cpu" or qkv.dtype not in _NAMES or qkv.dim() != 3:
        return False
    K, D3 = qkv.shape[1], qkv.shape[2]
    return 0 < K <= MAX_TOKENS and D3 % (3 * heads) == 0 and _lib() is not None


class _TokenAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, qkv: torch.Tensor, kpm: torch.Tensor, heads: int, p: float, key: int) -> torch.Tensor:  # noqa: ANN001
        lib = _lib()
        assert lib is not None
        qkv = qkv.contiguous()
        kpm = kpm.to(torch.uint8).contiguous()
        N, K, D3 = qkv.shape
        D = D3 // 3
        cut, scale = keep_cut(p) if p > 0.0 else (0, 1.0)
        probs = torch.empty(N, heads, K, K, dtype=torch.float32)
        out = torch.empty(N, K, D, dtype=qkv.dtype)
        getattr(lib, f"erc_token_attention_fwd_{_NAMES[qkv.dtype]}")(
            qkv.data_ptr(), kpm.data_ptr(), N, K, heads, D // heads, key, cut, scale, probs.data_ptr(), out.data_ptr())
        ctx.meta = (heads, key, cut, scale)
        ctx.save_for_backward(qkv, probs)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g: torch.Tensor):  # noqa: ANN001, ANN205
        lib = _lib()
        assert lib is not None
        qkv, probs = ctx.saved_tensors
        heads, key, cut, scale = ctx.meta
        N, K, D3 = qkv.shape
        g = g.to(qkv.dtype).contiguous()
        g_qkv = torch.empty_like(qkv)
        getattr(lib, f"erc_token_attention_bwd_{_NAMES[qkv.dtype]}")(
            qkv.data_ptr(), probs.data_ptr(), g.data_ptr(), N, K, heads, D3 // 3 // heads, key, cut, scale,
            g_qkv.data_ptr())
        return g_qkv, None, None, None, None


def token_attention(qkv: torch.Tensor, kpm: torch.Tensor, heads: int, p: float = 0.0,
                    key: int | None = None) -> torch.Tensor:
    """``qkv [N, K, 3 * D]`` (q, k, v of each token, heads interleaved as ``[3, H, D / H]``), ``kpm
    [N, K]`` (True = masked key) -> ``[N, K, D]``: softmax(q k^T / sqrt(D / H)) v per head, with
    dropout p on the attention weights (``key`` picks the mask; default: drawn from PyTorch's
    generator). Check :func:`supports` first."""
    return _TokenAttention.apply(qkv, kpm, heads, p, draw_key() if key is None else key)
