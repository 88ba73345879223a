"""Softplus on CPU with vectorised exp / log1p: the C kernel ``kernels/softplus.c``.

:func:`softplus` ``(x)`` -> float32 of x's shape, for contiguous float32 or bf16 CPU tensors
(:func:`supports`); the backward is ``g * sigmoid(x)`` in PyTorch (already fast). Used for the
Mamba's time steps, which its scan takes in float32, so the bf16 -> float32 cast is folded in.

Why: PyTorch's CPU softplus evaluates ``log1p`` one element at a time, ~9 ms forward for one
layer's ``[3167, 512]`` time steps (the backward is 0.4 ms). Built by :mod:`erc.heads.cpu.build`;
``ERC_C_SOFTPLUS=0`` (or no C compiler) keeps ``torch.nn.functional.softplus``.
"""

from __future__ import annotations

import ctypes

import torch

from erc.heads.cpu import build as ckernels

FLAGS = [*ckernels.BASE_FLAGS, "-ffast-math"]
_NAMES = ckernels.DTYPE_NAMES


def _declare(lib: ctypes.CDLL) -> None:
    for t in _NAMES.values():
        fn = getattr(lib, f"erc_softplus_{t}")
        fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
        fn.restype = None


def _lib() -> ctypes.CDLL | None:
    return ckernels.load("softplus", FLAGS, _declare, "ERC_C_SOFTPLUS", "softplus runs in PyTorch (slower)")


def supports(x: torch.Tensor) -> bool:
    """Whether the kernel takes ``x``: CPU, float32 or bf16, and the kernel is available."""
    return x.device.type == "cpu" and x.dtype in _NAMES and _lib() is not None


class _Softplus(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        lib = _lib()
        assert lib is not None
        x = x.contiguous()
        y = torch.empty(x.shape, dtype=torch.float32)
        getattr(lib, f"erc_softplus_{_NAMES[x.dtype]}")(x.data_ptr(), y.data_ptr(), x.numel())
        ctx.save_for_backward(x)
        return y

    @staticmethod
    def backward(ctx, g: torch.Tensor):  # noqa: ANN001, ANN205
        (x,) = ctx.saved_tensors
        return (g * torch.sigmoid(x.float())).to(x.dtype)


def softplus(x: torch.Tensor) -> torch.Tensor:
    """``log(1 + exp(x))`` as float32 (x where x > 20); check :func:`supports` first."""
    return _Softplus.apply(x)
