"""CPU dropout: FastDropout's statistics, scaling, gradients and seeding."""

from __future__ import annotations

import pytest
import torch

from erc.heads.dropout import FastDropout, keep_cut


def _scale(p: float) -> float:
    return keep_cut(p)[1]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fast_dropout_drops_p_and_keeps_the_mean(dtype) -> None:
    torch.manual_seed(0)
    x = torch.ones(400_000, dtype=dtype)
    y = FastDropout(0.3).train()(x)
    assert y.dtype == dtype
    dropped = float((y == 0).float().mean())
    assert abs(dropped - 0.3) < 0.005
    assert abs(float(y.float().mean()) - 1.0) < 0.01  # kept values are scaled by 1 / (1 - p)
    kept = y[y != 0].float()
    expect = torch.tensor(_scale(0.3)).to(dtype).float()
    assert torch.allclose(kept, expect.expand_as(kept), rtol=0, atol=0.008 if dtype == torch.bfloat16 else 1e-6)


def test_fast_dropout_is_identity_in_eval_and_seeded_in_training() -> None:
    x = torch.randn(5, 7, 3)
    drop = FastDropout(0.5)
    assert torch.equal(drop.eval()(x), x)
    drop.train()
    torch.manual_seed(1)
    a = drop(x)
    torch.manual_seed(1)
    assert torch.equal(drop(x), a)
    assert not torch.equal(drop(x), a)


def test_fast_dropout_gradient_is_the_mask() -> None:
    torch.manual_seed(2)
    x = torch.randn(64, 8, requires_grad=True)
    y = FastDropout(0.2).train()(x)
    (g,) = torch.autograd.grad(y.sum(), x)
    assert torch.allclose(g, torch.where(y != 0, y / x.detach(), torch.zeros_like(y)), atol=1e-5)
