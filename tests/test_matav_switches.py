"""Each MaTAV ablation switch removes what it names: the parts it drops have no parameters or get no
gradient, and the inputs it claims to ignore do not change the output (each checked against the
switch's other setting, where they must)."""

from __future__ import annotations

import copy

import torch
from torch import nn

from erc.heads import HeadInputs, build_head
from erc.heads.mamba import DialogueMamba
from tests.batches import random_batch

DIMS = {"text": 8, "audio": 6, "video": 5}
TINY = {"dim": 8, "hidden": 8, "queue_size": 16, "fusion_layers": 1, "fusion_heads": 2, "mamba_layers": 1}


def head(variant: str = "full", dims: dict[str, int] = DIMS, **kw) -> nn.Module:
    torch.manual_seed(0)
    h = build_head("matav", HeadInputs(dims, {}, 3), {**TINY, **{k: str(v) for k, v in kw.items()}}, variant=variant)
    return h.eval()


def logits(h: nn.Module, batch) -> torch.Tensor:
    with torch.no_grad():
        return h(batch).logits


def changed_later_turns(batch, b: int = 0, after: int = 2):
    """A copy of ``batch`` whose dialogue ``b`` has new features from turn ``after + 1`` on."""
    out = copy.deepcopy(batch)
    g = torch.Generator().manual_seed(9)
    for m, x in out.pooled.items():
        x[b, after + 1:] = torch.randn(x[b, after + 1:].shape, generator=g) * out.present[m][b, after + 1:, None]
    return out


def test_no_mamba_has_no_mamba_and_no_context() -> None:
    batch = random_batch(3, 5, DIMS, seed=0)
    other = changed_later_turns(batch)
    flat, full = head("no-mamba"), head("full")
    assert not any(isinstance(m, DialogueMamba) for m in flat.modules())
    assert any(isinstance(m, DialogueMamba) for m in full.modules())
    # turn 0 of dialogue 0 sees no other utterance without the Mamba; with it, it does (bidirectional)
    full_bi = head("full", bidirectional=True)
    torch.testing.assert_close(logits(flat, batch)[0, :3], logits(flat, other)[0, :3])
    assert not torch.allclose(logits(full_bi, batch)[0, :3], logits(full_bi, other)[0, :3])


def test_one_way_mamba_never_sees_later_turns() -> None:
    batch = random_batch(3, 5, DIMS, seed=0)
    other = changed_later_turns(batch)
    one_way, both = head(bidirectional=False), head(bidirectional=True)
    torch.testing.assert_close(logits(one_way, batch)[0, :3], logits(one_way, other)[0, :3])
    assert not torch.allclose(logits(both, batch)[0, :3], logits(both, other)[0, :3])
    assert one_way.context.net.blocks[0].bwd is None


def test_no_mec_has_no_momentum_encoder_queue_or_loss() -> None:
    batch = random_batch(3, 5, DIMS, seed=1)
    for variant, on in (("no-mec", False), ("full", True)):
        h = head(variant).train()
        assert hasattr(h, "proj_m") == on and hasattr(h, "queue_text") == on
        out = h(batch)
        assert ("mec" in out.parts) == on
        grads = torch.autograd.grad(out.aux_loss, list(h.proj.parameters()), allow_unused=True)
        moved = any(g is not None and bool(g.abs().sum() > 0) for g in grads)
        assert moved == on, variant  # the projections learn from MEC only when it is on


def test_input_norm_switch() -> None:
    off, on = head(input_norm=False), head(input_norm=True)
    assert not any(isinstance(m, nn.LayerNorm) for m in off.proj.modules())
    assert all(isinstance(on.proj[m][0], nn.LayerNorm) for m in DIMS)
    # a LayerNorm'd input is blind to the scale of each vector; without it the scale matters
    batch = random_batch(3, 5, DIMS, seed=3)
    scaled = random_batch(3, 5, DIMS, seed=3)
    scaled.pooled = {m: 5.0 * x for m, x in scaled.pooled.items()}
    torch.testing.assert_close(logits(on, batch), logits(on, scaled), atol=1e-4, rtol=1e-4)
    assert not torch.allclose(logits(off, batch), logits(off, scaled), atol=1e-3)


def test_one_modality_switches_mec_off() -> None:
    h = head(dims={"text": 8}).train()
    assert not h.mec_on and not hasattr(h, "proj_m")
    out = h(random_batch(2, 3, {"text": 8}, seed=0))
    assert float(out.aux_loss.detach()) == 0.0 and "mec" not in out.parts
