"""Video encoders: Haar face crops + handcrafted descriptors, and a timm CNN (random or local
weights) on generated mp4 clips with a drawn face."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from erc.errors import MediaMissing, UserError, WeightsMissing
from erc.corpus import Utterance
from erc.extract.encoders import build_encoder
from erc.extract.encoders.faces import face_crops, face_descriptors
from erc.extract.encoders.video import CNNVideoEncoder, FaceDescriptorEncoder, import_timm
from tests.media_utils import face_frame, write_mp4


def _timm_loads() -> bool:
    try:
        import_timm()
    except UserError:
        return False
    return True


needs_timm = pytest.mark.skipif(not _timm_loads(), reason="timm / torchvision not installed or not loadable "
                                "(the optional 'vision' extra)")


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("video")
    moving = np.stack([face_frame(cx=80 + 4 * i) for i in range(30)])  # face left of centre
    blank = np.full((10, 120, 160, 3), 90, np.uint8)
    pair = np.concatenate([np.full((20, 240, 320, 3), 90, np.uint8), np.stack([face_frame()] * 20)], axis=2)
    return {"moving": write_mp4(d / "moving.mp4", moving, fps=10),
            "blank": write_mp4(d / "blank.mp4", blank, fps=10),
            "pair": write_mp4(d / "pair.mp4", pair, fps=10)}


def _utt(path: Path, **kw: object) -> Utterance:
    return Utterance("u", "d", 0, "A", "x", "neu", "train", video=str(path), **kw)  # type: ignore[arg-type]


def test_face_crops_find_the_face(clips: dict[str, Path]) -> None:
    crops = face_crops(_utt(clips["moving"], start=0.0, end=1.0), 5, 64)
    assert crops.crops.shape == (5, 64, 64, 3) and crops.crops.dtype == np.uint8
    assert crops.found >= 3
    centre = crops.crops[:, 28:36, 28:36].reshape(-1, 3).mean(0)
    assert centre[0] > 180  # skin, not the grey background the centre crop would give
    none = face_crops(_utt(clips["blank"]), 4, 32)
    assert none.found == 0 and none.crops.shape == (4, 32, 32, 3)
    right = face_crops(_utt(clips["pair"], video_region="right"), 3, 64)
    left = face_crops(_utt(clips["pair"], video_region="left"), 3, 64)
    assert right.found == 3 and left.found == 0


def test_descriptors_shape() -> None:
    crops = np.random.default_rng(0).integers(0, 255, (3, 64, 64, 3), dtype=np.uint8)
    desc = face_descriptors(crops)
    assert desc.shape == (3, 828) and desc.dtype == np.float32 and np.isfinite(desc).all()


def test_faces_encoder(clips: dict[str, Path]) -> None:
    enc = build_encoder("video", "faces", {"frames": "8"})
    assert isinstance(enc, FaceDescriptorEncoder)
    enc.check()
    enc.load("cpu")
    utts = [_utt(clips["moving"]), _utt(clips["pair"], video_region="right")]
    items = [enc.prepare(utts, i) for i in range(2)]
    out = enc.encode(items)
    for o in out:
        assert o.frames.shape == (8, enc.dim) and o.pooled.shape == (enc.dim,)
        np.testing.assert_allclose(o.pooled, o.frames.mean(0), rtol=1e-5)
    with pytest.raises(MediaMissing):
        enc.prepare([Utterance("m", "d", 0, "A", "x", "neu", "train")], 0)
    prov = enc.provenance()
    assert prov["frames_seen"] == 16 and prov["frames_with_face"] >= 12


@needs_timm
def test_cnn_random_init(clips: dict[str, Path]) -> None:
    enc = build_encoder("video", "cnn", {"model": "resnet18", "size": "64", "frames": "4", "random_init": "true"})
    assert isinstance(enc, CNNVideoEncoder) and enc.name == "resnet18"
    enc.check()
    enc.load("cpu")
    utts = [_utt(clips["moving"]), _utt(clips["blank"])]
    items = [enc.prepare(utts, i) for i in range(2)]
    assert items[0].shape == (4, 64, 64, 3)
    out = enc.encode(items)
    assert enc.dim == 1000
    for o in out:
        assert o.frames.shape == (4, 1000) and o.pooled.shape == (1000,)
        np.testing.assert_allclose(o.pooled, o.frames.astype(np.float32).mean(0), atol=1e-2)
    np.testing.assert_allclose(enc.encode(items[1:])[0].pooled, out[1].pooled, atol=1e-4)
    feats = build_encoder("video", "cnn", {"model": "resnet18", "size": "64", "frames": "4",
                                           "random_init": "true", "output": "features"})
    feats.load("cpu")
    assert feats.dim == 512 and feats.encode(items[:1])[0].frames.shape == (4, 512)


@needs_timm
def test_cnn_local_weights_file(clips: dict[str, Path], tmp_path: Path) -> None:
    import timm
    import torch

    torch.manual_seed(0)
    file = tmp_path / "r18.pth"
    torch.save(timm.create_model("resnet18", pretrained=False).state_dict(), file)
    encs = []
    for _ in range(2):
        enc = build_encoder("video", "cnn", {"model": "resnet18", "size": "64", "frames": "2", "weights": str(file)})
        enc.check()
        enc.load("cpu")
        encs.append(enc)
    item = encs[0].prepare([_utt(clips["moving"])], 0)
    a, b = (e.encode([item])[0].pooled for e in encs)
    np.testing.assert_allclose(a, b, atol=1e-5)
    assert encs[0].provenance()["weights"] == str(file)


@needs_timm
def test_cnn_missing_weights_one_line(tmp_path: Path) -> None:
    for overrides in ({}, {"weights": str(tmp_path / "missing.pth")}):
        enc = build_encoder("video", "cnn", overrides)
        with pytest.raises(WeightsMissing) as err:
            enc.check()
        msg = str(err.value)
        assert "\n" not in msg and "video.weights" in msg and "resnet50" in msg
    with pytest.raises(WeightsMissing):
        build_encoder("video", "swin").check()


def test_cnn_without_timm_is_one_user_error_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm -> ImportError
    enc = build_encoder("video", "cnn", {"random_init": "true"})
    with pytest.raises(UserError) as err:
        enc.check()
    msg = str(err.value)
    assert "\n" not in msg and "[vision]" in msg and "hf-video" in msg
