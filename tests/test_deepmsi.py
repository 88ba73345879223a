"""DeepMSI-MER: the token compression on a constructed example, per-frame compression inside the
head, Eq. 1's visual term, and that each ablation switch removes what it names."""

from __future__ import annotations

import pytest
import torch

from erc.errors import UserError
from erc.heads import HeadInputs, build_head
from erc.heads.deepmsi import compress
from tests.batches import random_batch

# four tokens of one frame (D = 2); the guide points along x. Temperature 1:
# cos = [0, 1, 0, 0.707] -> softmax a = [0.148, 0.403, 0.148, 0.301]; uniform 0.25 -> tokens 1 and 3 relevant.
TOKENS = torch.tensor([[[0.0, 1.0], [2.0, 0.0], [0.0, -3.0], [1.0, 1.0]]])
GUIDE = torch.tensor([[1.0, 0.0]])


def run(x=TOKENS, valid=None, guide=GUIDE, fuse=0.0):
    valid = torch.ones(x.shape[:2], dtype=torch.bool) if valid is None else valid
    return compress(x, valid, guide, temperature=1.0, threshold=1.0, fuse_threshold=fuse)


def test_compress_keeps_the_relevant_tokens_in_order_and_fuses_each_other_token_into_its_nearest() -> None:
    out, valid = run()
    assert valid.tolist() == [[True, True, False, False]]
    # token 0 [0, 1] is nearest (cos 0.707) to relevant token 3 [1, 1]; token 2 [0, -3] to token 1 [2, 0]
    # (cos 0 against -0.707); each adds 1/L of itself, L = 2 irrelevant tokens
    want = torch.tensor([[[2.0, -1.5], [1.0, 1.5], [0.0, 0.0], [0.0, 0.0]]])
    torch.testing.assert_close(out, want)


def test_compress_fusion_threshold_leaves_dissimilar_tokens_out() -> None:
    out, _ = run(fuse=0.5)  # token 2's best cosine is 0 < 0.5: dropped, not fused; token 0's 0.707 is fused
    torch.testing.assert_close(out[0, :2], torch.tensor([[2.0, 0.0], [1.0, 1.5]]))


def test_compress_ignores_padding_tokens() -> None:
    x = torch.cat([TOKENS, torch.tensor([[[50.0, 0.0], [0.0, 9.0]]])], dim=1)  # two padding tokens
    valid = torch.tensor([[True] * 4 + [False] * 2])
    out, v = run(x, valid)
    ref, rv = run()
    assert v[0, :4].tolist() == rv[0].tolist() and not v[0, 4:].any()
    torch.testing.assert_close(out[:, :4], ref)
    assert (out[:, 4:] == 0).all()


def test_compress_sends_a_gradient_to_the_guide() -> None:
    guide = GUIDE.clone().requires_grad_()
    out, _ = run(guide=guide)
    (out * torch.tensor([1.0, 2.0])).sum().backward()
    assert guide.grad is not None and guide.grad.abs().sum() > 0


TINY = {"dim": 8, "hidden": 8, "dropout": 0.0}


def head_and_batch(variant: str = "full", tokens: int = 3, **extra):
    inputs = HeadInputs({"text": 6, "audio": 4}, {"video": 5}, 3, {"video": tokens} if tokens > 1 else {})
    torch.manual_seed(0)
    head = build_head("deepmsi", inputs, {**TINY, **extra}, variant)
    batch = random_batch(2, 4, {"text": 6, "audio": 4}, {"video": 5}, 3, seed=3, T=12, absent=0.0,
                         frame_tokens={"video": tokens})
    return head, batch


def test_token_mode_compresses_each_frame_on_its_own() -> None:
    head, _ = head_and_batch()
    head.eval()
    g = torch.Generator().manual_seed(1)
    frames = torch.randn(1, 12, 5, generator=g)  # 4 frames x 3 tokens
    valid = torch.ones(1, 12, dtype=torch.bool)
    sem = torch.randn(1, 8, generator=g)
    with torch.no_grad():
        vec, v = head.frame_vectors(frames, valid, sem)
        other = frames.clone()
        other[0, 3:6] = torch.randn(3, 5, generator=g)  # change frame 1's tokens only
        vec2, _ = head.frame_vectors(other, valid, sem)
    assert vec.shape == (1, 4, 8) and v.all()  # every frame stays: compression is inside each frame
    torch.testing.assert_close(vec2[0, [0, 2, 3]], vec[0, [0, 2, 3]])
    assert not torch.allclose(vec2[0, 1], vec[0, 1])


def test_frames_variant_compresses_across_frames() -> None:
    head, _ = head_and_batch("frames")
    head.eval()
    g = torch.Generator().manual_seed(2)
    frames, valid = torch.randn(3, 12, 5, generator=g), torch.ones(3, 12, dtype=torch.bool)
    with torch.no_grad():
        _, v = head.frame_vectors(frames, valid, torch.randn(3, 8, generator=g))
    assert v.shape == (3, 4) and int(v.sum()) < 12  # fewer frames than the 4 x 3 given


def test_eq1_guide_is_the_weighted_sum_of_the_semantic_and_the_pooled_visual_vector() -> None:
    head, _ = head_and_batch(semantic_weight=0.25)
    s, vbar = torch.tensor([[4.0, 0.0]]), torch.tensor([[0.0, 8.0]])
    torch.testing.assert_close(head._guide(s, vbar), torch.tensor([[1.0, 6.0]]))
    torch.testing.assert_close(head._guide(None, vbar), vbar)  # no text / audio: the visual term alone


def _grads(head, batch) -> dict[str, torch.Tensor | None]:
    head.train()
    out = head(batch)
    loss = torch.nn.functional.cross_entropy(out.logits[batch.mask], batch.labels[batch.mask]) + out.aux_loss
    head.zero_grad()
    loss.backward()
    return {n: p.grad for n, p in head.named_parameters()}


def _moved(g: dict[str, torch.Tensor | None], *names: str) -> bool:
    return any(g[n] is not None and g[n].abs().sum() > 0 for n in names)


@pytest.mark.parametrize("variant,tokens", [("no-vsc", 3), ("no-vsc", 1), ("frames", 3), ("frames", 1), ("full", 3)])
def test_no_vsc_removes_the_compression_and_keeps_the_layernorm(variant: str, tokens: int) -> None:
    head, batch = head_and_batch(variant, tokens=tokens, use_contrastive=False)
    g = _grads(head, batch)
    assert _moved(g, "semantic.weight", "semantic.bias") == (variant != "no-vsc")  # the guide only steers the VSC
    assert _moved(g, "vsc_norm.weight") and _moved(g, "vsc_norm.bias")  # the LayerNorm after it stays in every row


def test_no_vsc_is_the_token_path_with_the_compression_replaced_by_the_identity() -> None:
    from erc.heads.blocks import masked_mean

    head, _ = head_and_batch("no-vsc")
    g = torch.Generator().manual_seed(4)
    frames, valid = torch.randn(2, 12, 5, generator=g), torch.ones(2, 12, dtype=torch.bool)
    valid[1, 6:] = False
    with torch.no_grad():
        vec, v = head.frame_vectors(frames, valid, None)
        x = head.frame_in(frames).view(2, 4, 3, 8)
        want = masked_mean(head.vsc_norm(x), valid.view(2, 4, 3))
    torch.testing.assert_close(vec, want)
    assert v.tolist() == [[True] * 4, [True, True, False, False]]


def test_no_vsc_output_does_not_depend_on_the_semantic_layer() -> None:
    head, batch = head_and_batch("no-vsc")
    head.eval()
    with torch.no_grad():
        ref = head(batch).logits
        head.semantic.weight.normal_()
        assert torch.equal(head(batch).logits, ref)


def test_no_contrastive_drops_the_label_aware_loss() -> None:
    head, batch = head_and_batch("full")
    head.train()
    out = head(batch)
    assert float(out.aux_loss.detach()) > 0 and {"lac_text", "lac_audio"} <= set(out.parts)
    head, batch = head_and_batch("no-contrastive")
    head.train()
    out = head(batch)
    assert float(out.aux_loss.detach()) == 0.0 and not out.parts


def test_token_mode_needs_tokens_in_the_cache() -> None:
    with pytest.raises(UserError, match="video.tokens=true"):
        head_and_batch("full", tokens=1)
    head, batch = head_and_batch("frames", tokens=1)  # a per-frame cache works across frames
    assert head(batch).logits.shape == (2, 4, 3)


def test_a_token_cache_gives_the_head_its_tokens_per_frame_and_truncates_whole_frames(tmp_path) -> None:
    import h5py
    import numpy as np

    from erc.train.dialogues import DialogueData
    from tests.synth_cache import write_synthetic_cache

    path = write_synthetic_cache(tmp_path / "c.h5", n_dialogues=4, lengths=(2, 3), dims={"text": 4, "video": 5},
                                 frames={"video": 5})
    with h5py.File(path, "r+") as f:  # 2..4 frames of 3 tokens each
        g = f["features/video/syn-video"]
        n = g["pooled"].shape[0]
        lens = 3 * (2 + np.arange(n) % 3)
        offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
        del g["frames"], g["offsets"]
        g.create_dataset("frames", data=np.arange(offsets[-1] * 5, dtype=np.float32).reshape(-1, 5))
        g.create_dataset("offsets", data=offsets)
        g.attrs["frame_tokens"] = 3
    d = DialogueData(path, ["text", "video"], frames=["video"], max_frames=2)
    assert d.inputs().frame_tokens == {"video": 3}
    assert (d.frames["video"].lengths == 6).all()  # 2 whole frames of 3 tokens each
    b = d.collate([0, 1])
    head = build_head("deepmsi", d.inputs(), TINY)
    assert head(b).logits.shape == (2, b.mask.shape[1], 4)


SUBSETS = {"T": ("text",), "A": ("audio",), "T+V": ("text", "video"), "A+V": ("audio", "video")}


def subset_head(mods: tuple[str, ...], variant: str = "full"):
    dims = {m: d for m, d in {"text": 6, "audio": 4}.items() if m in mods}
    frame_dims = {"video": 5} if "video" in mods else {}
    torch.manual_seed(0)
    head = build_head("deepmsi", HeadInputs(dims, frame_dims, 3, {"video": 3} if frame_dims else {}), TINY, variant)
    batch = random_batch(2, 4, {**dims, **({"video": 5} if frame_dims else {})}, frame_dims, 3, seed=3, T=12,
                         absent=0.0, frame_tokens={"video": 3})
    return head, batch


@pytest.mark.parametrize("subset", list(SUBSETS))
def test_table3_modality_subsets_train_with_the_guide_from_what_is_present(subset: str) -> None:
    mods = SUBSETS[subset]
    from erc.heads.deepmsi import DeepMSI

    assert DeepMSI.frames_for(DeepMSI.Config(), list(mods)) == (["video"] if "video" in mods else [])
    head, batch = subset_head(mods)
    g = _grads(head, batch)
    names = dict(head.named_parameters())
    assert all(n.split(".")[1] in mods for n in names if n.startswith("proj."))  # one projection per modality present
    if "video" in mods:
        assert names["semantic.weight"].shape == (8, 8)  # s from the one modality present (T or A), dim 8
        assert _moved(g, "semantic.weight")  # ... and it guides the compression
        assert _moved(g, *(n for n in names if n.startswith("proj.")))
    else:  # no video: no frame path, no contrastive term (it contrasts t and a with v)
        assert not any(n.startswith(("frame_in", "semantic", "vsc_norm", "tcn", "proj_v")) for n in names)
        head.train()
        out = head(batch)
        assert float(out.aux_loss.detach()) == 0.0 and not out.parts
        assert out.logits.shape == (2, 4, 3)


def test_a_text_only_head_ignores_video_and_audio_in_the_batch() -> None:
    head, batch = subset_head(("text",))
    head.eval()
    full = random_batch(2, 4, {"text": 6, "audio": 4, "video": 5}, {"video": 5}, 3, seed=3, T=12, absent=0.0,
                        frame_tokens={"video": 3})
    with torch.no_grad():
        torch.testing.assert_close(head(full).logits, head(batch).logits)


def test_deepmsi_needs_some_modality_and_video_as_frames() -> None:
    with pytest.raises(UserError, match="at least one"):
        build_head("deepmsi", HeadInputs({}, {}, 3), TINY)
    with pytest.raises(UserError, match="frame features"):
        build_head("deepmsi", HeadInputs({"text": 6, "video": 5}, {}, 3), TINY)
