"""The fast PyTorch Mamba path (packed real positions + hand-written scan backward) computes what
transformers' ``MambaMixer.slow_forward`` computes: outputs and gradients, with and without
padding; the C scan kernel (erc.heads.cpu.scan_kernel) computes what the PyTorch scan computes.

The tests run in float64; transformers' slow path casts B, C, A and the inputs of the scan to
float32 internally, so agreement is to float32 rounding of those terms (relative ~1e-8)."""

from __future__ import annotations

import pytest
import torch

from erc.heads import cpu
from erc.heads.mamba import DialogueMamba, MambaBlock, PackedLayout, _PackedCausalConv, pack_index, torch_mixer_forward
from erc.heads.scan import TorchScan


@pytest.fixture(params=[1 << 20, 40], ids=["one-chunk", "many-chunks"])
def chunk(request, monkeypatch):
    """Run each test on the PyTorch scan (the C kernel off) in one chunk and split into many
    (checkpointed) chunks."""
    monkeypatch.setenv("ERC_CPU_KERNELS", "0")
    monkeypatch.setattr(TorchScan, "CHUNK", request.param)
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
    assert torch.autograd.gradcheck(lambda *t: TorchScan.apply(*t, counts), (dt, u, Bm, Cm, A))


def _block_reference(block: MambaBlock, x: torch.Tensor) -> torch.Tensor:
    """The layer on one unpadded sequence ``[1, n, D]``, written with transformers' slow_forward."""
    y = block.fwd.slow_forward(x)
    if block.bwd is not None:
        y = y + block.bwd.slow_forward(x.flip(1)).flip(1)
    return block.norm(x + y)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_block_padded_and_packed_match_slow_forward_per_sequence(bidirectional, chunk):
    torch.manual_seed(2)
    block = MambaBlock(16, bidirectional=bidirectional, dropout=0.0).double().eval()
    lengths = [6, 3, 1, 5]
    mask = torch.arange(7)[None, :] < torch.tensor(lengths)[:, None]
    x = torch.randn(4, 7, 16, dtype=torch.float64)
    padded = block(x, mask)
    layout = PackedLayout(mask)
    packed = layout.unpack(block.forward_packed(layout.pack(x), layout))
    for b, n in enumerate(lengths):
        ref = _block_reference(block, x[b:b + 1, :n])
        torch.testing.assert_close(padded[b:b + 1, :n], ref, rtol=1e-7, atol=1e-9)
        torch.testing.assert_close(packed[b:b + 1, :n], ref, rtol=1e-7, atol=1e-9)
    assert torch.all(padded[~mask] == 0) and torch.all(packed[~mask] == 0)


def test_dialogue_mamba_gradients_match_per_sequence_reference():
    torch.manual_seed(3)
    net = DialogueMamba(8, layers=2, bidirectional=True, dropout=0.0, state_size=3).double().eval()
    lengths = [5, 2, 4]
    mask = torch.arange(6)[None, :] < torch.tensor(lengths)[:, None]
    x = torch.randn(3, 6, 8, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 6, 8, dtype=torch.float64)
    got = net(x, mask)
    loss_ref = 0.0
    for b, n in enumerate(lengths):
        h = x[b:b + 1, :n]
        for block in net.blocks:
            h = _block_reference(block, h)
        torch.testing.assert_close(got[b:b + 1, :n], h, rtol=1e-7, atol=1e-9)
        loss_ref = loss_ref + (h * w[b:b + 1, :n]).sum()
    params = [*net.parameters(), x]
    for a, b in zip(torch.autograd.grad((got * w)[mask].sum(), params), torch.autograd.grad(loss_ref, params)):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-8)


def test_layout_shift_and_reverse_follow_each_sequence():
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1], [1, 0, 0, 0]], dtype=torch.bool)
    layout = PackedLayout(mask)
    pos = torch.arange(12).view(3, 4)  # the flat position of every (dialogue, step)
    packed = layout.pack(pos.unsqueeze(-1).double()).squeeze(-1).long()  # [P]
    ext = torch.cat([packed, torch.tensor([-1])])
    for r in range(layout.P):
        b, t = divmod(int(packed[r]), 4)
        n = int(mask[b].sum())
        assert int(ext[layout.shifted(1)[r]]) == (b * 4 + t - 1 if t >= 1 else -1)
        assert int(ext[layout.shifted(-2)[r]]) == (b * 4 + t + 2 if t + 2 < n else -1)
        assert int(packed[layout.reverse[r]]) == b * 4 + (n - 1 - t)


def test_packed_causal_conv_gradcheck():
    torch.manual_seed(4)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 1, 0, 0, 0]], dtype=torch.bool)
    layout = PackedLayout(mask)
    x = torch.randn(layout.P, 3, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(3, 1, 4, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *t: _PackedCausalConv.apply(*t, layout), (x, weight, bias))


@pytest.fixture
def c_scan(monkeypatch):
    """The C kernel (erc.heads.cpu.scan_kernel) on; the test is skipped where it cannot be built."""
    from erc.heads.cpu import scan_kernel as cscan

    monkeypatch.setenv("ERC_CPU_KERNELS", "scan")
    if not cscan.available():
        pytest.skip("no C compiler: the C selective scan is unavailable")


def _scan_inputs(dtype, seed=0):
    torch.manual_seed(seed)
    lengths = [9, 7, 7, 3, 1]
    mask = torch.arange(10)[None, :] < torch.tensor(lengths)[:, None]
    layout = PackedLayout(mask)
    P, E, N = layout.P, 6, 5
    args = [(0.5 * torch.rand(P, E, dtype=dtype)).requires_grad_(), torch.randn(P, E, dtype=dtype, requires_grad=True),
            torch.randn(P, N, dtype=dtype, requires_grad=True), torch.randn(P, N, dtype=dtype, requires_grad=True),
            (-torch.rand(E, N, dtype=dtype) - 0.1).requires_grad_()]
    return layout, args


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_c_scan_matches_the_pytorch_scan(c_scan, dtype, monkeypatch):
    layout, args = _scan_inputs(dtype)
    gy = torch.randn(layout.P, args[0].shape[1], dtype=dtype)
    assert cpu.scan_backend(args[0]) == "torch+c-scan"
    y_c = cpu.selective_scan(*args, layout.counts)
    g_c = torch.autograd.grad(y_c, args, gy)
    monkeypatch.setenv("ERC_CPU_KERNELS", "0")
    assert cpu.scan_backend(args[0]) == "torch"
    y_t = cpu.selective_scan(*args, layout.counts)
    g_t = torch.autograd.grad(y_t, args, gy)
    tol = dict(rtol=1e-10, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(y_c, y_t, **tol)
    for a, b in zip(g_c, g_t):
        torch.testing.assert_close(a, b, **tol)


def test_c_scan_gradcheck_with_threads(c_scan):
    layout, args = _scan_inputs(torch.float64, seed=1)
    before = torch.get_num_threads()
    torch.set_num_threads(2)  # two ranges of sequences on two threads, their g_A summed
    try:
        assert torch.autograd.gradcheck(lambda *t: cpu.selective_scan(*t, layout.counts), args)
    finally:
        torch.set_num_threads(before)


def test_c_scan_is_used_by_the_mixer_and_matches_slow_forward(c_scan):
    mixer = _mixer(seed=5)
    lengths = [6, 2, 5]
    mask = torch.arange(7)[None, :] < torch.tensor(lengths)[:, None]
    x = torch.randn(3, 7, 12, dtype=torch.float64)
    got = torch_mixer_forward(mixer, x, mask)
    for b, n in enumerate(lengths):
        torch.testing.assert_close(got[b:b + 1, :n], mixer.slow_forward(x[b:b + 1, :n]), rtol=1e-7, atol=1e-9)
    block = MambaBlock(12, dropout=0.0)
    block(x.float(), mask)
    assert block.backend == "torch+c-scan"


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs os.fork")
def test_c_scan_runs_in_a_forked_child_after_the_parent_used_its_threads(c_scan):
    import os
    import time

    layout, args = _scan_inputs(torch.float32, seed=2)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        y = cpu.selective_scan(*args, layout.counts).detach()  # the parent's thread pool now exists
        pid = os.fork()
        if pid == 0:  # the child: same call, then report through the exit code
            ok = torch.equal(cpu.selective_scan(*args, layout.counts).detach(), y)
            os._exit(0 if ok else 1)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                assert os.waitstatus_to_exitcode(status) == 0
                return
            time.sleep(0.05)
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        pytest.fail("the scan hung in a forked child")
    finally:
        torch.set_num_threads(before)
