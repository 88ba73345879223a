"""Dropout for CPU training: :class:`FastDropout` (a drop-in ``nn.Dropout`` with a fused residual
add) and :func:`use_fast_dropout`, which puts it in place of every ``nn.Dropout`` of a head."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from erc.heads.cpu import dropout as cdropout


class FastDropout(nn.Dropout):
    """``nn.Dropout`` for CPU training with a cheaper keep mask, and a fused residual add.

    On CPU the drop probability is p rounded to a multiple of 1/65536 (0.1 -> 0.100006) and kept
    elements are scaled by 1 / (1 - that probability). Float32 and bf16 tensors go through the C
    kernel of :mod:`erc.heads.cpu.dropout` (one pass, the mask recomputed in the backward: ~0.9 ms
    instead of ~5 ms forward on ``[9500, 256]``); otherwise (other dtypes, ``ERC_C_DROPOUT=0``, no
    C compiler) the mask is drawn as 16-bit integers, four per 64-bit ``random_()`` word, a
    quarter of the random numbers of ``rand``. Other devices use ``F.dropout``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if x.device.type != "cpu":
            return F.dropout(x, self.p, True)
        if self.p == 1.0:
            return x * 0.0
        if cdropout.supports(x):
            return cdropout.dropout(x, self.p)
        cut, scale = cdropout.keep_cut(self.p)
        n = x.numel()
        words = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-(2 ** 63), None)
        keep = words.view(torch.int16)[:n].view(x.shape) >= cut - 32768
        return x * keep.to(x.dtype).mul_(scale)

    def residual(self, x: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        """``x + self(r)``: one pass on CPU for a float32 residual stream ``x`` and a float32 or bf16
        branch ``r`` of its shape (the bf16 autocast case: the sum is float32)."""
        if self.training and 0.0 < self.p < 1.0 and x.dtype == torch.float32 and x.shape == r.shape \
                and cdropout.supports(x, r):
            return cdropout.dropout_add(x, r, self.p)
        return x + self(r)


def use_fast_dropout(module: nn.Module) -> None:
    """Replace every plain ``nn.Dropout`` inside ``module`` by :class:`FastDropout` (same p)."""
    for name, child in list(module.named_children()):
        if type(child) is nn.Dropout:
            setattr(module, name, FastDropout(child.p))
        else:
            use_fast_dropout(child)
