"""The C kernel for attention among a few tokens (erc.heads.cpu.attention) computes what the fusion
layer's einsum attention computes, with the same attention-weight dropout for the same key."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from erc.heads.blocks import FusionLayer
from erc.heads.cpu import attention as cattention
from erc.heads.dropout import keep_cut


@pytest.fixture
def kernel(monkeypatch):
    monkeypatch.setenv("ERC_CPU_KERNELS", "attention")
    if cattention._lib() is None:
        pytest.skip("no C compiler: the C kernels are unavailable")


def _mix32(x: np.ndarray) -> np.ndarray:
    m = np.uint64(0xFFFFFFFF)
    x = x ^ (x >> np.uint64(16))
    x = (x * np.uint64(0x7FEB352D)) & m
    x = x ^ (x >> np.uint64(15))
    x = (x * np.uint64(0x846CA68B)) & m
    return x ^ (x >> np.uint64(16))


def _hash_mask(n: int, key: int, p: float) -> torch.Tensor:
    """erc_common.h's counter-based dropout mask of ``n`` elements for ``key``, written again in NumPy:
    element i keeps (scaled) when 16 bits of hash(key, i // 2) are >= cut."""
    m = np.uint64(0xFFFFFFFF)
    cut, scale = keep_cut(p)
    i = np.arange(n, dtype=np.uint64)
    c = i >> np.uint64(1)
    seed = np.uint64(key)
    inner = _mix32((c & m) ^ (seed & m))
    h = _mix32((inner + (seed >> np.uint64(32)) + ((c >> np.uint64(32)) * np.uint64(0x9E3779B9))) & m)
    v = np.where(i & np.uint64(1), h >> np.uint64(16), h & np.uint64(0xFFFF))
    return torch.from_numpy(np.where(v >= cut, scale, 0.0).astype(np.float32))


def _reference(qkv: torch.Tensor, kpm: torch.Tensor, heads: int, p: float, key: int) -> torch.Tensor:
    """FusionLayer's PyTorch attention, the weights dropped with the kernel's mask for ``key``."""
    N, K, D3 = qkv.shape
    D = D3 // 3
    q, k, v = qkv.view(N, K, 3, heads, D // heads).unbind(2)
    att = torch.einsum("nqhd,nkhd->nhqk", q, k) / math.sqrt(D // heads)
    att = att.masked_fill(kpm[:, None, None, :], float("-inf")).softmax(-1)
    if p > 0:
        att = att * _hash_mask(att.numel(), key, p).view(att.shape)
    return torch.einsum("nhqk,nkhd->nqhd", att, v).reshape(N, K, D)


def _inputs(N: int = 37, K: int = 3, D: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    qkv = torch.randn(N, K, 3 * D, requires_grad=True)
    kpm = torch.rand(N, K) < 0.3
    kpm[:, 1] = False  # at least one real key per item
    return qkv, kpm


@pytest.mark.parametrize("p", [0.0, 0.3])
@pytest.mark.parametrize("K", [2, 3, 5])
def test_kernel_matches_the_einsum_attention_and_its_gradient(kernel, p, K) -> None:
    qkv, kpm = _inputs(K=K)
    y = cattention.token_attention(qkv, kpm, 4, p, key=1234)
    ref = _reference(qkv, kpm, 4, p, 1234)
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-6)
    g = torch.randn_like(y)
    (g_c,) = torch.autograd.grad(y, qkv, g)
    (g_r,) = torch.autograd.grad(ref, qkv, g)
    torch.testing.assert_close(g_c, g_r, rtol=1e-5, atol=1e-5)


def test_kernel_in_bf16_is_close_to_float32(kernel) -> None:
    qkv, kpm = _inputs(N=200)
    y = cattention.token_attention(qkv.detach().bfloat16(), kpm, 4, 0.0)
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), _reference(qkv.detach(), kpm, 4, 0.0, 0), rtol=2e-2, atol=2e-2)


def test_masked_keys_do_not_reach_the_outputs(kernel) -> None:
    qkv, kpm = _inputs()
    kpm[:] = False
    kpm[:, 2] = True
    other = qkv.detach().clone()
    other[:, 2, 32:] = torch.randn(other.shape[0], 64)  # the masked token's k and v
    a = cattention.token_attention(qkv.detach(), kpm, 4, 0.0)
    b = cattention.token_attention(other, kpm, 4, 0.0)
    assert torch.equal(a[:, :2], b[:, :2])


def test_fusion_layer_gives_the_same_outputs_with_and_without_the_kernel(kernel, monkeypatch) -> None:
    torch.manual_seed(3)
    layer = FusionLayer(32, 4, dropout=0.1).eval()
    x = torch.randn(50, 3, 32)
    kpm = torch.zeros(50, 3, dtype=torch.bool)
    kpm[::3, 2] = True
    y_c = layer(x, kpm)
    monkeypatch.setenv("ERC_CPU_KERNELS", "0")
    assert not cattention.supports(x.repeat(1, 1, 3), 4)
    torch.testing.assert_close(y_c, layer(x, kpm), rtol=1e-5, atol=1e-5)


def test_supports_only_cpu_float_inputs_of_a_few_tokens(kernel) -> None:
    assert cattention.supports(torch.zeros(4, 3, 96), 4)
    assert cattention.supports(torch.zeros(4, 3, 96, dtype=torch.bfloat16), 4)
    assert not cattention.supports(torch.zeros(4, 3, 96, dtype=torch.float64), 4)
    assert not cattention.supports(torch.zeros(4, 9, 96), 4)  # more tokens than the kernel holds
    assert not cattention.supports(torch.zeros(4, 3, 96), 5)  # 96 is not 3 x heads x width
