"""The 'hf-video' encoder: tiny randomly initialised transformers image models (ResNet, Swin)
saved to local folders, on generated mp4 clips with a drawn face."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from erc.errors import UserError, WeightsMissing
from erc.corpus import Utterance
from erc.extract.encoders import build_encoder
from erc.extract.encoders.video_hf import HFVideoEncoder
from tests.media_utils import face_frame, write_mp4


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from transformers import (ConvNextImageProcessor, ResNetConfig, ResNetForImageClassification, ResNetModel,
                              SwinConfig, SwinModel)

    d = tmp_path_factory.mktemp("image_models")
    torch.manual_seed(0)
    resnet = ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], num_labels=5)
    ResNetForImageClassification(resnet).save_pretrained(d / "resnet-cls")
    ConvNextImageProcessor(image_mean=[0.5] * 3, image_std=[0.5] * 3).save_pretrained(d / "resnet-cls")
    ResNetModel(resnet).save_pretrained(d / "resnet-backbone")
    swin = SwinConfig(image_size=32, patch_size=4, embed_dim=8, depths=[1, 1], num_heads=[1, 2], window_size=4)
    SwinModel(swin).save_pretrained(d / "swin")
    return {p.name: p for p in d.iterdir()}


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    frames = np.stack([face_frame(cx=80 + 4 * i) for i in range(30)])
    return write_mp4(tmp_path_factory.mktemp("video") / "face.mp4", frames, fps=10)


def _utts(clip: Path) -> list[Utterance]:
    return [Utterance(f"u{i}", "d", i, "A", "x", "neu", "train", video=str(clip), start=float(i), end=i + 1.0)
            for i in range(2)]


def _encode(enc: HFVideoEncoder, clip: Path) -> list:
    enc.check()
    enc.load("cpu")
    utts = _utts(clip)
    return enc.encode([enc.prepare(utts, i) for i in range(len(utts))])


def test_swin_features_per_frame_and_their_mean(models: dict[str, Path], clip: Path) -> None:
    enc = build_encoder("video", "hf-video", {"model": str(models["swin"]), "frames": "3"})
    assert isinstance(enc, HFVideoEncoder) and enc.name == "swin"
    out = _encode(enc, clip)
    assert enc.size == 32 and enc.dim == 16 and enc.frame_dim == 16  # embed_dim * 2 after one merge
    for o in out:
        assert o.frames.shape == (3, 16) and o.frames.dtype == np.float16
        assert o.pooled.shape == (16,) and o.pooled.dtype == np.float32
        np.testing.assert_allclose(o.pooled, o.frames.astype(np.float32).mean(0), atol=1e-2)
    prov = enc.provenance()
    assert prov["weights_source"] == "local" and prov["frames_seen"] == 6 and prov["size"] == 32
    assert prov["normalisation"].startswith("imagenet")


def test_resnet_logits_use_the_processor_normalisation(models: dict[str, Path], clip: Path) -> None:
    logits = build_encoder("video", "hf-video", {"model": str(models["resnet-cls"]), "output": "logits",
                                                 "frames": "2", "size": "48"})
    out = _encode(logits, clip)
    assert logits.dim == 5 and out[0].frames.shape == (2, 5)
    assert logits.provenance()["normalisation"] == "image processor"
    feats = build_encoder("video", "hf-video", {"model": str(models["resnet-cls"]), "frames": "2", "size": "48"})
    assert _encode(feats, clip)[0].frames.shape == (2, 16)  # the backbone's last stage, pooled


def test_same_weights_give_the_same_features(models: dict[str, Path], clip: Path) -> None:
    runs = [_encode(build_encoder("video", "hf-video", {"model": str(models["swin"]), "frames": "2"}), clip)
            for _ in range(2)]
    np.testing.assert_allclose(runs[0][1].pooled, runs[1][1].pooled, atol=1e-6)


def test_a_model_folder_as_the_encoder_name(models: dict[str, Path]) -> None:
    enc = build_encoder("video", str(models["swin"]), {"keep_frames": "false"})
    assert isinstance(enc, HFVideoEncoder) and enc.name == "swin"
    enc.load("cpu")
    assert enc.frame_dim is None


def test_logits_from_a_checkpoint_without_a_head_is_one_line(models: dict[str, Path]) -> None:
    enc = build_encoder("video", "hf-video", {"model": str(models["resnet-backbone"]), "output": "logits"})
    with pytest.raises(UserError) as err:
        enc.load("cpu")
    assert "\n" not in str(err.value) and "classification head" in str(err.value)


def test_missing_weights_is_one_line(tmp_path: Path) -> None:
    for model in ("microsoft/swin-tiny-patch4-window7-224", str(tmp_path)):
        with pytest.raises(WeightsMissing) as err:
            build_encoder("video", "hf-video", {"model": model}).check()
        assert "\n" not in str(err.value)
    with pytest.raises(UserError, match="output must be"):
        build_encoder("video", "hf-video", {"model": "x", "output": "pooled"})


def test_swin_tokens_keep_each_frames_patch_grid(models: dict[str, Path], clip: Path) -> None:
    from erc.corpus import Corpus
    from erc.extract.provenance import group_attrs

    # face crops on both sides (tokens=true alone defaults to whole frames: see the next test)
    enc = build_encoder("video", "hf-video", {"model": str(models["swin"]), "frames": "3", "tokens": "true", "crop": "face"})
    out = _encode(enc, clip)
    assert enc.frame_tokens == 16 and enc.dim == 16  # 32 px / patch 4 = 8 x 8, one merge -> 4 x 4 tokens
    per_frame = build_encoder("video", "hf-video", {"model": str(models["swin"]), "frames": "3"})
    ref = _encode(per_frame, clip)
    for o, r in zip(out, ref):
        assert o.frames.shape == (3 * 16, 16) and o.frames.dtype == np.float16
        np.testing.assert_allclose(o.pooled, r.pooled, atol=1e-5)  # pooled is unchanged
        # frame-major rows: each frame's 16 tokens average to that frame's pooled output (Swin's pooler)
        tokens = o.frames.astype(np.float32).reshape(3, 16, 16)
        np.testing.assert_allclose(tokens.mean(1), r.frames.astype(np.float32), atol=2e-2)
    corpus = Corpus(name="c", labels=["neu"], utterances=_utts(clip))
    assert group_attrs(enc, "h", corpus, "cmd")["frame_tokens"] == 16
    assert "frame_tokens" not in group_attrs(per_frame, "h", corpus, "cmd")
    with pytest.raises(UserError, match="tokens=true"):
        build_encoder("video", "hf-video", {"model": "x", "output": "logits", "tokens": "true"})


def test_the_token_path_sees_whole_frames_by_default_and_face_crops_by_name(models: dict[str, Path], clip: Path) -> None:
    from erc.extract.encoders.faces import face_crops, whole_frames

    tokens = build_encoder("video", "hf-video", {"model": str(models["swin"]), "frames": "3", "tokens": "true"})
    per_frame = build_encoder("video", "hf-video", {"model": str(models["swin"]), "frames": "3"})
    named = build_encoder("video", "hf-video", {"model": str(models["swin"]), "frames": "3", "tokens": "true",
                                                "crop": "face"})
    assert (tokens.crop, per_frame.crop, named.crop) == ("frame", "face", "face")
    utt = _utts(clip)[0]
    whole, faces = whole_frames(utt, 3, 32), face_crops(utt, 3, 32)
    assert whole.crops.shape == faces.crops.shape == (3, 32, 32, 3) and not np.array_equal(whole.crops, faces.crops)
    tokens.load("cpu")
    np.testing.assert_array_equal(tokens.prepare(_utts(clip), 0), whole.crops)
    assert tokens.provenance()["crop"] == "whole frame" and per_frame.provenance()["crop"] == "face"
    with pytest.raises(UserError, match="crop"):
        build_encoder("video", "hf-video", {"model": "x", "crop": "body"})


def test_the_deepmsi_preset_takes_15_whole_frames_of_swin_tokens() -> None:
    enc = build_encoder("video", "deepmsi-swin")
    assert isinstance(enc, HFVideoEncoder) and enc.name == "deepmsi-swin"
    c = enc.config
    assert (c.model, c.frames, c.tokens, enc.crop) == ("microsoft/swin-tiny-patch4-window7-224", 15, True, "frame")
