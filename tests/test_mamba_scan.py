"""The fast PyTorch Mamba path (packed real positions + hand-written scan backward) computes what
transformers' ``MambaMixer.slow_forward`` computes: outputs and gradients, with and without
padding.

The tests run in float64; transformers' slow path casts B, C, A and the inputs of the scan to
float32 internally, so agreement is to float32 rounding of those terms (relative ~1e-8)."""

from __future__ import annotations

import pytest
import torch

from erc.heads.mamba import MambaBlock, _PackedScan, pack_index, torch_mixer_forward


@pytest.fixture(params=[1 << 20, 40], ids=["one-chunk", "many-chunks"])
def chunk(request, monkeypatch):
    """Run each test with the scan in one chunk and split into many (checkpointed) chunks."""
    monkeypatch.setattr(_PackedScan, "CHUNK", request.param)
    return request.param


def _mixer(dim: int = 12, state: int = 5, seed: int = 0):
    torch.manual_seed(seed)
    block = MambaBlock(dim, state_size=state, expand=2, conv_kernel=4, dropout=0.0)
    mixer = block.fwd.double()
    with torch.no_grad():  # make every parameter matter (D, conv bias, ...)
        for p in mixer.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return mixer


def _grads(mixer, loss, *extra):
    return torch.autograd.grad(loss, [*mixer.parameters(), *extra])


def test_unpadded_batch_matches_slow_forward(chunk):
    mixer = _mixer()
    x = torch.randn(3, 9, 12, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 9, 12, dtype=torch.float64)
    ref = mixer.slow_forward(x)
    got = torch_mixer_forward(mixer, x, torch.ones(3, 9, dtype=torch.bool))
    torch.testing.assert_close(got, ref, rtol=1e-7, atol=1e-9)
    g_ref = _grads(mixer, (ref * w).sum(), x)
    g_got = _grads(mixer, (got * w).sum(), x)
    for a, b in zip(g_got, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-8)


def test_padded_batch_matches_slow_forward_per_sequence(chunk):
    mixer = _mixer(seed=1)
    lengths = [7, 2, 9, 1, 7]
    B, L = len(lengths), max(lengths) + 2  # extra padding after the longest too
    mask = torch.arange(L)[None, :] < torch.tensor(lengths)[:, None]
    x = torch.randn(B, L, 12, dtype=torch.float64)
    w = torch.randn(B, L, 12, dtype=torch.float64)
    got = torch_mixer_forward(mixer, x, mask)
    assert torch.all(got[~mask] == 0)
    loss_got = (got * w)[mask].sum()
    loss_ref = 0.0
    for b, n in enumerate(lengths):
        ref = mixer.slow_forward(x[b:b + 1, :n])
        torch.testing.assert_close(got[b:b + 1, :n], ref, rtol=1e-7, atol=1e-9)
        loss_ref = loss_ref + (ref * w[b:b + 1, :n]).sum()
    for a, b in zip(_grads(mixer, loss_got), _grads(mixer, loss_ref)):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-8)


def test_packed_scan_gradcheck(chunk):
    torch.manual_seed(0)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1], [1, 0, 0, 0]], dtype=torch.bool)
    _, counts = pack_index(mask)
    assert counts == [3, 2, 2, 1]
    P, E, N = int(mask.sum()), 3, 2
    dt = torch.rand(P, E, dtype=torch.float64, requires_grad=True)
    u = torch.randn(P, E, dtype=torch.float64, requires_grad=True)
    Bm = torch.randn(P, N, dtype=torch.float64, requires_grad=True)
    Cm = torch.randn(P, N, dtype=torch.float64, requires_grad=True)
    A = (-torch.rand(E, N, dtype=torch.float64) - 0.1).requires_grad_()
    assert torch.autograd.gradcheck(lambda *t: _PackedScan.apply(*t, counts), (dt, u, Bm, Cm, A))


@pytest.mark.parametrize("bidirectional", [False, True])
def test_block_float32_close_to_slow_forward(bidirectional, chunk):
    torch.manual_seed(2)
    block = MambaBlock(16, bidirectional=bidirectional, dropout=0.0).eval()
    mask = torch.arange(6)[None, :] < torch.tensor([6, 3])[:, None]
    x = torch.randn(2, 6, 16)
    got = block(x, mask)
    ref_mixer = lambda m, v, _mask: m.slow_forward(v)  # noqa: E731
    import erc.heads.mamba as mm

    fast = mm.torch_mixer_forward
    try:
        outs = []
        for b, n in enumerate([6, 3]):
            mm.torch_mixer_forward = ref_mixer
            outs.append(block(x[b:b + 1, :n], mask[b:b + 1, :n]))
        mm.torch_mixer_forward = fast
    finally:
        mm.torch_mixer_forward = fast
    for b, n in enumerate([6, 3]):
        torch.testing.assert_close(got[b:b + 1, :n], outs[b], rtol=1e-4, atol=1e-5)
