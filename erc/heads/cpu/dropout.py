"""Dropout (and dropout + residual add) on CPU in one pass: the C kernel ``kernels/dropout.c``.

:func:`dropout` ``(x, p)`` and :func:`dropout_add` ``(res, r, p)`` = ``res + dropout(r, p)`` are
autograd functions for contiguous CPU tensors (:func:`supports` says which dtypes). The keep
mask is a hash of a per-call key and the element's index, so it is never stored: the backward
recomputes it from the key. The key is drawn from PyTorch's default CPU generator, so
``torch.manual_seed`` makes runs repeat. The drop probability is ``p`` rounded to a multiple of
1/65536 (0.1 -> 0.100006), kept elements are scaled by 1 / (1 - that probability) in float32.

Why: under bf16 autocast a PyTorch dropout is five passes over the tensor (random words, a
compare, the scaled mask, the multiply, and the multiply of the backward), and the residual add
that follows mixes float32 with bf16; MaTAV runs ~20 of them per step on ``[N, 3, 256]``
tensors. One thread: on this 2-core machine a second (Python) thread for the kernel competes
with PyTorch's OpenMP workers and made whole training steps slower. Built by
:mod:`erc.heads.cpu.build`; ``ERC_C_DROPOUT=0`` (or no C compiler) falls back
to :class:`erc.heads.dropout.FastDropout`'s PyTorch mask.
"""

from __future__ import annotations

import ctypes

import torch

from erc.heads.cpu import build as ckernels

FLAGS = list(ckernels.BASE_FLAGS)  # no -ffast-math: a dropped NaN must stay NaN (x * 0)
_NAMES = ckernels.DTYPE_NAMES


def _declare(lib: ctypes.CDLL) -> None:
    ptr, i64, u64, u32, f32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_uint64, ctypes.c_uint32, ctypes.c_float
    for fn in ("erc_dropout_f32_f32", "erc_dropout_bf16_bf16", "erc_dropout_f32_bf16"):
        getattr(lib, fn).argtypes = [ptr, ptr, i64, u64, u32, f32]
        getattr(lib, fn).restype = None
    for fn in ("erc_dropout_add_f32", "erc_dropout_add_bf16"):
        getattr(lib, fn).argtypes = [ptr, ptr, ptr, i64, u64, u32, f32]
        getattr(lib, fn).restype = None


def _lib() -> ctypes.CDLL | None:
    return ckernels.load("dropout", FLAGS, _declare, "ERC_C_DROPOUT", "dropout runs in PyTorch (slower)")


def available() -> bool:
    """True when the kernel is built (or builds now) and ``ERC_C_DROPOUT`` is not "0"."""
    return _lib() is not None


def supports(*tensors: torch.Tensor) -> bool:
    """Whether the kernel takes these tensors: CPU, float32 or bf16, and the kernel is available."""
    return all(t.device.type == "cpu" and t.dtype in _NAMES for t in tensors) and available()


def keep_cut(p: float) -> tuple[int, float]:
    """``(cut, scale)`` for drop probability p: drop below ``cut = round(p * 65536)``, keep scaled."""
    cut = round(p * 65536)
    return cut, 1.0 / (1.0 - cut / 65536)


def draw_key() -> int:
    """A dropout key from PyTorch's default CPU generator (so `torch.manual_seed` repeats masks)."""
    return int(torch.randint(0, 2 ** 62, (), dtype=torch.int64).item())


def _apply(x: torch.Tensor, out_dtype: torch.dtype, key: int, p: float) -> torch.Tensor:
    lib = _lib()
    assert lib is not None
    cut, scale = keep_cut(p)
    y = torch.empty(x.shape, dtype=out_dtype)
    getattr(lib, f"erc_dropout_{_NAMES[x.dtype]}_{_NAMES[out_dtype]}")(x.data_ptr(), y.data_ptr(), x.numel(), key,
                                                                    cut, scale)
    return y


class _Dropout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, p: float, key: int) -> torch.Tensor:  # noqa: ANN001
        ctx.p, ctx.key, ctx.dtype = p, key, x.dtype
        return _apply(x.contiguous(), x.dtype, key, p)

    @staticmethod
    def backward(ctx, g: torch.Tensor):  # noqa: ANN001, ANN205
        g = g.contiguous()
        if g.dtype not in _NAMES or (g.dtype, ctx.dtype) == (torch.bfloat16, torch.float32):
            g = g.float()
        return _apply(g, ctx.dtype, ctx.key, ctx.p), None, None


class _DropoutAdd(torch.autograd.Function):
    @staticmethod
    def forward(ctx, res: torch.Tensor, r: torch.Tensor, p: float, key: int) -> torch.Tensor:  # noqa: ANN001
        ctx.p, ctx.key, ctx.dtype = p, key, r.dtype
        lib = _lib()
        assert lib is not None
        res, r = res.contiguous(), r.contiguous()
        cut, scale = keep_cut(p)
        y = torch.empty(res.shape, dtype=torch.float32)
        getattr(lib, f"erc_dropout_add_{_NAMES[r.dtype]}")(res.data_ptr(), r.data_ptr(), y.data_ptr(), y.numel(), key,
                                                          cut, scale)
        return y

    @staticmethod
    def backward(ctx, g: torch.Tensor):  # noqa: ANN001, ANN205
        g = g.contiguous().float()
        return g, _apply(g, ctx.dtype, ctx.key, ctx.p), None, None


def dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    """Training-mode dropout of ``x`` (any shape; float32 or bf16 on CPU), same shape and dtype."""
    return _Dropout.apply(x, p, draw_key())


def dropout_add(res: torch.Tensor, r: torch.Tensor, p: float) -> torch.Tensor:
    """``res + dropout(r, p)`` with ``res`` float32 and ``r`` float32 or bf16 of the same shape -> float32."""
    if res.shape != r.shape or res.dtype != torch.float32:
        raise ValueError(f"dropout_add takes a float32 residual and a branch of its shape, got "
                         f"{tuple(res.shape)} {res.dtype} and {tuple(r.shape)} {r.dtype}")
    return _DropoutAdd.apply(res, r, p, draw_key())
