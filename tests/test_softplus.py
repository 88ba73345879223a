"""The C softplus (erc.heads.cpu.softplus) matches PyTorch's, its gradient too, in float32 out."""

from __future__ import annotations

import pytest
import torch

from erc.heads.cpu import softplus as csoftplus


@pytest.fixture
def kernel(monkeypatch):
    monkeypatch.setenv("ERC_C_SOFTPLUS", "1")
    if not csoftplus.supports(torch.zeros(1)):
        pytest.skip("no C compiler: the C softplus is unavailable")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_softplus_matches_pytorch_and_returns_float32(kernel, dtype) -> None:
    torch.manual_seed(0)
    x = (torch.randn(1000, 37) * 6 - 3).to(dtype)
    x[0, :6] = torch.tensor([-100.0, -30.0, 0.0, 19.9, 20.1, 50.0])
    y = csoftplus.softplus(x)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, torch.nn.functional.softplus(x.float()), rtol=2e-6, atol=1e-12)


def test_softplus_gradient_is_the_sigmoid(kernel) -> None:
    x = torch.randn(257, 9, dtype=torch.float32, requires_grad=True)
    g = torch.randn(257, 9)
    (gx,) = torch.autograd.grad(csoftplus.softplus(x), x, g)
    torch.testing.assert_close(gx, g * torch.sigmoid(x.detach()))
    xb = x.detach().bfloat16().requires_grad_()
    (gb,) = torch.autograd.grad(csoftplus.softplus(xb), xb, g)
    assert gb.dtype == torch.bfloat16


def test_softplus_keeps_nan_and_inf(kernel) -> None:
    y = csoftplus.softplus(torch.tensor([float("nan"), float("inf"), -float("inf")]))
    assert torch.isnan(y[0]) and y[1] == float("inf") and y[2] == 0.0
