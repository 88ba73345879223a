"""CPU dropout: FastDropout's statistics, scaling, gradients and seeding on both of its paths (the
C kernel of erc.heads.cpu.dropout and the PyTorch mask), and the fused residual add."""

from __future__ import annotations

import pytest
import torch

from erc.heads.cpu import dropout as cdropout
from erc.heads.dropout import FastDropout


@pytest.fixture(params=["c", "torch"])
def path(request, monkeypatch):
    """Run the test with the C kernel ("c"; skipped where it cannot be built) and without it."""
    monkeypatch.setenv("ERC_C_DROPOUT", "1" if request.param == "c" else "0")
    if request.param == "c" and not cdropout.available():
        pytest.skip("no C compiler: the C dropout kernel is unavailable")
    return request.param


@pytest.fixture
def kernel(monkeypatch):
    monkeypatch.setenv("ERC_C_DROPOUT", "1")
    if not cdropout.available():
        pytest.skip("no C compiler: the C dropout kernel is unavailable")


def _scale(p: float) -> float:
    return cdropout.keep_cut(p)[1]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fast_dropout_drops_p_and_keeps_the_mean(path, dtype) -> None:
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


def test_fast_dropout_is_identity_in_eval_and_seeded_in_training(path) -> None:
    x = torch.randn(5, 7, 3)
    drop = FastDropout(0.5)
    assert torch.equal(drop.eval()(x), x)
    drop.train()
    torch.manual_seed(1)
    a = drop(x)
    torch.manual_seed(1)
    assert torch.equal(drop(x), a)
    assert not torch.equal(drop(x), a)


def test_fast_dropout_gradient_is_the_mask(path) -> None:
    torch.manual_seed(2)
    x = torch.randn(64, 8, requires_grad=True)
    y = FastDropout(0.2).train()(x)
    (g,) = torch.autograd.grad(y.sum(), x)
    assert torch.allclose(g, torch.where(y != 0, y / x.detach(), torch.zeros_like(y)), atol=1e-5)


def test_fast_dropout_residual_adds_the_dropped_branch(path) -> None:
    torch.manual_seed(3)
    x = torch.randn(40, 3, 16, requires_grad=True)
    r = torch.randn(40, 3, 16).bfloat16().requires_grad_()
    drop = FastDropout(0.25).train()
    torch.manual_seed(4)
    y = drop.residual(x, r)
    assert y.dtype == torch.float32
    kept = (y - x.detach()) != 0
    assert abs(float(kept.float().mean()) - 0.75) < 0.05
    w = torch.randn_like(y)
    g_x, g_r = torch.autograd.grad((y * w).sum(), (x, r))
    assert torch.equal(g_x, w)
    assert g_r.dtype == torch.bfloat16
    torch.testing.assert_close(g_r.float(), torch.where(kept, w * _scale(0.25), 0.0), rtol=1e-2, atol=1e-2)
    assert torch.equal(drop.eval().residual(x, r), x + r)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_c_dropout_scales_kept_values_in_float32_and_rounds_once(kernel, dtype) -> None:
    torch.manual_seed(5)
    x = torch.randn(3000, 37).to(dtype)
    y = cdropout.dropout(x, 0.1)
    keep = y != 0
    assert torch.equal(y[keep], (x.float() * _scale(0.1)).to(dtype)[keep])
    assert torch.equal(y[~keep], torch.zeros_like(y[~keep]))


def test_c_dropout_backward_recomputes_the_forward_mask(kernel) -> None:
    torch.manual_seed(6)
    x = torch.randn(257, 129).bfloat16().requires_grad_()
    y = cdropout.dropout(x, 0.4)
    w = torch.randn(257, 129).bfloat16()
    (g,) = torch.autograd.grad(y, x, w)
    assert g.dtype == torch.bfloat16
    assert torch.equal(g, torch.where(y != 0, w.float() * _scale(0.4), 0.0).bfloat16())


def test_c_dropout_add_is_residual_plus_dropout_in_float32(kernel) -> None:
    torch.manual_seed(7)
    res = torch.randn(500, 64)
    r = torch.randn(500, 64)
    y = cdropout.dropout_add(res, r, 0.3)
    keep = (y - res) != 0
    assert torch.allclose(y, res + torch.where(keep, r * _scale(0.3), 0.0), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="float32 residual"):
        cdropout.dropout_add(res.bfloat16(), r, 0.3)


def test_c_dropout_keeps_nan_as_nan(kernel) -> None:
    x = torch.full((4096,), float("nan"))
    assert torch.isnan(cdropout.dropout(x, 0.5)).all()  # NaN * 0 is NaN, as in PyTorch's dropout
    assert torch.isnan(cdropout.dropout(x.bfloat16(), 0.5)).all()


def test_c_dropout_masks_are_independent_of_position_and_call(kernel) -> None:
    torch.manual_seed(8)
    n = 1 << 20
    a = (cdropout.dropout(torch.ones(n), 0.5) != 0).float()
    b = (cdropout.dropout(torch.ones(n), 0.5) != 0).float()
    corr = lambda u, v: float(torch.corrcoef(torch.stack([u, v]))[0, 1])  # noqa: E731
    assert abs(float(a.mean()) - 0.5) < 0.003
    assert abs(corr(a[0::2], a[1::2])) < 0.01  # the two halves of one hash
    assert abs(corr(a[:-1], a[1:])) < 0.01
    assert abs(corr(a[:-256], a[256:])) < 0.01  # the same column of consecutive rows
    assert abs(corr(a, b)) < 0.01  # two calls draw two keys
    assert float(a.view(-1, 256).mean(0).std()) < 0.02  # no column is favoured
