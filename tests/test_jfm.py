"""JFM: the joint-vector exchange computes Eqs. 1-4 with shared layers, and each ablation switch
removes what it names (tiny random configs; the pre-trained layers: tests/test_pretrained_layers.py)."""

from __future__ import annotations

import pytest
import torch

from erc.heads import HeadInputs, build_head
from erc.heads.jfm import _layer_with
from tests.batches import random_batch

TINY = {"text_model": "", "audio_model": "", "layer_dim": 16, "layer_heads": 2, "layer_ff": 32,
        "extractor_dim": 12, "extractor_heads": 2, "extractor_ff": 24, "extractor_layers": 1,
        "patch_len": 2, "patch_bins": 2, "dropout": 0.0}
FRAMES = {"text": 7, "audio": 4}


def make(variant: str = "full", **extra):
    torch.manual_seed(0)
    head = build_head("jfm", HeadInputs({}, dict(FRAMES), 3), {**TINY, **extra}, variant)
    batch = random_batch(2, 4, {}, FRAMES, 3, seed=4, T=6, absent=0.0)
    return head, batch


def other_audio(batch):
    """The same batch with different mel frames (same lengths)."""
    b = random_batch(2, 4, {}, FRAMES, 3, seed=4, T=6, absent=0.0)
    b.frames["audio"] = b.frames["audio"] * -2.0 + 1.0 * b.frame_mask["audio"].unsqueeze(-1)
    return b


def test_joint_vector_exchange_follows_eqs_1_to_4_with_shared_layers() -> None:
    head, batch = make(blocks=1)
    head.eval()
    g = torch.Generator().manual_seed(0)
    T, A = torch.randn(3, 5, 16, generator=g), torch.randn(3, 7, 16, generator=g)
    vt, va = torch.ones(3, 5, dtype=torch.bool), torch.ones(3, 7, dtype=torch.bool)
    vt[0, 3:] = False
    va[1, 4:] = False
    lt, la = head.layers["text"][0], head.layers["audio"][0]
    with torch.no_grad():
        got = head.fuse({"text": T, "audio": A}, {"text": vt, "audio": va})
        _, hat_a = _layer_with(la, A, va, head.joint["audio"][0].expand(3, -1, -1))  # Eq. 1: VTrans([A ; v])
        _, hat_t = _layer_with(lt, T, vt, head.joint["text"][0].expand(3, -1, -1))  # Eq. 3: LTrans([T ; v'])
        want_t, _ = _layer_with(lt, T, vt, head.bridge["text"][0](hat_a))  # Eq. 2: LTrans([T ; MLP(v̂)]), T un-hatted
        want_a, _ = _layer_with(la, A, va, head.bridge["audio"][0](hat_t))  # Eq. 4: VTrans([A ; MLP(v̂')])
    assert hat_a.shape == (3, 4, 16)  # the joint vectors: length 4
    torch.testing.assert_close(got["text"][vt], want_t[vt])
    torch.testing.assert_close(got["audio"][va], want_a[va])
    # one layer per side and block, used by both passes (LTrans' / VTrans' share the weights)
    assert len(head.layers["text"]) == len(head.layers["audio"]) == 1 and not hasattr(head, "cross")


def test_the_text_side_hears_the_audio_only_through_the_joint_vectors() -> None:
    head, batch = make(blocks=1)
    head.eval()
    with torch.no_grad():
        ref = head.encode(batch)["text"]
        moved = head.encode(other_audio(batch))["text"]
        assert not torch.allclose(moved, ref)  # the exchange carries audio information
        for p in head.bridge["text"].parameters():  # cut the audio -> text bridge: the channel closes
            p.zero_()
        assert torch.allclose(head.encode(other_audio(batch))["text"], head.encode(batch)["text"])


@pytest.mark.parametrize("variant", ["no-jfm", "concat"])
def test_late_and_concat_fusion_remove_the_exchange_and_the_text_layers(variant: str) -> None:
    head, batch = make(variant)
    head.eval()
    assert "text" not in head.layers and not hasattr(head, "joint") and not hasattr(head, "bridge")
    with torch.no_grad():
        torch.testing.assert_close(head.encode(other_audio(batch))["text"], head.encode(batch)["text"])
    assert list(head.classifier) == (["concat"] if variant == "concat" else ["text", "audio"])


def test_no_joint_vector_removes_the_joint_vectors_but_keeps_an_exchange() -> None:
    head, batch = make("no-joint-vector")
    head.eval()
    assert not hasattr(head, "joint") and hasattr(head, "bridge")
    with torch.no_grad():
        assert not torch.allclose(head.encode(other_audio(batch))["text"], head.encode(batch)["text"])


def other_text(batch):
    """The same batch with different text token frames (same lengths)."""
    b = random_batch(2, 4, {}, FRAMES, 3, seed=4, T=6, absent=0.0)
    b.frames["text"] = b.frames["text"] * -2.0 + 1.0 * b.frame_mask["text"].unsqueeze(-1)
    return b


@pytest.mark.parametrize("extra", [{}, {"joint_len": 0}, {"fusion": "cfa"}])
def test_no_exchange_cuts_every_path_between_the_sides_and_keeps_the_rest(extra: dict) -> None:
    full, batch = make(**extra)
    head, _ = make("no-exchange", **extra)
    head.eval()
    full.eval()
    assert not hasattr(head, "bridge") and not hasattr(head, "cross")  # the exchange's modules are not built
    assert hasattr(head, "joint") == hasattr(full, "joint")  # the joint vectors stay (when the variant has them)
    with torch.no_grad():
        # the text side's CLS is blind to the audio and the audio side's to the text: joint vectors and CLS path cut
        torch.testing.assert_close(head.encode(other_audio(batch))["text"], head.encode(batch)["text"])
        torch.testing.assert_close(head.encode(other_text(batch))["audio"], head.encode(batch)["audio"])
        # ... while the same switch left on carries the other side's information
        assert not torch.allclose(full.encode(other_audio(batch))["text"], full.encode(batch)["text"])
        assert not torch.allclose(full.encode(other_text(batch))["audio"], full.encode(batch)["audio"])
    shared = {n for n, _ in head.named_parameters()}
    assert shared == {n for n, _ in full.named_parameters() if not n.startswith(("bridge.", "cross."))}


def test_no_exchange_joint_vectors_still_train() -> None:
    head, batch = make("no-exchange")
    head.train()
    out = head(batch)
    (torch.nn.functional.cross_entropy(out.logits[batch.mask], batch.labels[batch.mask]) + out.aux_loss).backward()
    assert head.joint["text"].grad.abs().sum() > 0 and head.joint["audio"].grad.abs().sum() > 0


def test_full_joint_vectors_receive_gradient_and_cfa_has_none() -> None:
    head, batch = make()
    head.train()
    out = head(batch)
    (torch.nn.functional.cross_entropy(out.logits[batch.mask], batch.labels[batch.mask]) + out.aux_loss).backward()
    assert head.joint["text"].grad.abs().sum() > 0 and head.joint["audio"].grad.abs().sum() > 0
    cfa, _ = make("cfa")
    assert not hasattr(cfa, "joint") and not hasattr(cfa, "bridge") and len(cfa.cross["text"]) == 2


def test_no_icl_drops_the_contrastive_loss() -> None:
    head, batch = make()
    head.train()
    batch.labels[batch.mask] = torch.arange(int(batch.mask.sum())) % 2  # every class has a positive
    out = head(batch)
    assert float(out.aux_loss.detach()) > 0 and "icl" in out.parts
    head, _ = make("no-icl")
    head.train()
    out = head(batch)
    assert float(out.aux_loss.detach()) == 0.0 and "icl" not in out.parts


def test_audio_patches_are_two_dimensional_and_time_major() -> None:
    head, _ = make()
    x = torch.arange(2 * 3 * 4, dtype=torch.float32).view(2, 3, 4)  # 3 frames x 4 bins
    valid = torch.tensor([[True, True, True], [True, False, False]])
    p, v, t = head.patches(x, valid)
    # 2 time patches (3 frames padded to 4) x 2 frequency patches, each [2 bins, 2 frames]
    assert p.shape == (2, 4, 4) and t.tolist() == [0, 0, 1, 1]
    assert p[0, 0].tolist() == [0.0, 4.0, 1.0, 5.0]  # bins 0-1 of frames 0-1, flattened [bin, frame]
    assert p[0, 3].tolist() == [10.0, 0.0, 11.0, 0.0]  # bins 2-3 of frame 2 and a padded frame
    assert v.tolist() == [[True] * 4, [True, True, False, False]]
