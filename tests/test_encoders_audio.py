"""Audio encoders: log-mel, and a tiny random WavLM / wav2vec2 saved to a local folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from erc.errors import MediaMissing, WeightsMissing
from erc.corpus import Utterance
from erc.extract.encoders import build_encoder
from erc.extract.encoders.audio import HFAudioEncoder, MelEncoder
from tests.media_utils import tone, write_mp4, counter_frames, write_wav


@pytest.fixture(scope="module")
def dialogue(tmp_path_factory: pytest.TempPathFactory) -> list[Utterance]:
    """Three utterances: a 2 s wav, a 0.7 s wav, and the [1.0, 2.2] s segment of an mp4."""
    d = tmp_path_factory.mktemp("audio")
    a = write_wav(d / "a.wav", tone(2.0, freq=300))
    b = write_wav(d / "b.wav", tone(0.7, freq=800) + 0.05 * np.random.default_rng(0).standard_normal(11200).astype(np.float32))
    c = write_mp4(d / "c.mp4", counter_frames(30), fps=10, audio=tone(3.0, freq=500))
    return [Utterance("a", "d", 0, "A", "x", "neu", "train", audio=str(a)),
            Utterance("b", "d", 1, "B", "y", "neu", "train", audio=str(b)),
            Utterance("c", "d", 2, "A", "z", "neu", "train", audio=str(c), start=1.0, end=2.2),
            Utterance("m", "d", 3, "B", "w", "neu", "train")]


def test_mel_shapes(dialogue: list[Utterance]) -> None:
    enc = build_encoder("audio", "mel")
    assert isinstance(enc, MelEncoder)
    enc.load("cpu")
    out = enc.encode([enc.prepare(dialogue, i) for i in range(3)])
    assert enc.dim == 160 and enc.frame_dim == 80
    for o, seconds in zip(out, (2.0, 0.7, 1.2)):
        assert o.pooled.shape == (160,) and o.frames.shape[1] == 80
        assert abs(o.frames.shape[0] - (seconds * 100 + 1)) <= 2
        assert np.isfinite(o.frames).all() and np.isfinite(o.pooled).all()
    assert [enc.sort_key(u) for u in dialogue] == pytest.approx([2.0, 0.7, 1.2, 0.0])
    with pytest.raises(MediaMissing):
        enc.prepare(dialogue, 3)
    short = build_encoder("audio", "mel", {"max_seconds": "0.5", "n_mels": "40"})
    short.load("cpu")
    f = short.encode([short.prepare(dialogue, 0)])[0]
    assert f.frames.shape == (51, 40) and f.pooled.shape == (80,)


def _save_tiny(folder: Path, kind: str) -> Path:
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model, WavLMConfig, WavLMModel

    common = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                  conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
                  feat_extract_norm="layer", do_stable_layer_norm=True)
    torch.manual_seed(0)
    if kind == "wavlm":
        model = WavLMModel(WavLMConfig(num_buckets=16, max_bucket_distance=50, **common))
    else:
        model = Wav2Vec2Model(Wav2Vec2Config(**common))
    model.save_pretrained(folder)
    Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True,
                             return_attention_mask=True).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("kind", ["wavlm", "wav2vec2"])
def test_hf_audio_tiny(kind: str, dialogue: list[Utterance], tmp_path: Path) -> None:
    folder = _save_tiny(tmp_path / f"tiny-{kind}", kind)
    enc = build_encoder("audio", str(folder), {"all_layers": "true", "layers": "last"})
    assert isinstance(enc, HFAudioEncoder) and enc.name == f"tiny-{kind}"
    enc.check()
    enc.load("cpu")
    items = [enc.prepare(dialogue, i) for i in range(3)]
    batch = enc.encode(items)
    assert enc.dim == 32 and enc.frame_dim == 32
    for o, seconds in zip(batch, (2.0, 0.7, 1.2)):
        assert o.pooled.shape == (32,) and o.layers.shape == (3, 32)
        assert abs(o.frames.shape[0] - seconds * 50) <= 2 and o.frames.shape[1] == 32
    for i, item in enumerate(items):  # padding in a batch does not change an item's output
        single = enc.encode([item])[0]
        assert single.frames.shape == batch[i].frames.shape
        np.testing.assert_allclose(batch[i].pooled, single.pooled, atol=1e-3)
    np.testing.assert_allclose(batch[0].layers[-1], batch[0].pooled, atol=1e-5)
    assert enc.provenance()["frame_rate_hz"] == 50.0


def test_hf_audio_layer_choice(dialogue: list[Utterance], tmp_path: Path) -> None:
    folder = _save_tiny(tmp_path / "tiny", "wavlm")
    enc = build_encoder("audio", "hf-audio", {"model": str(folder), "layers": "1", "all_layers": "true",
                                              "keep_frames": "false"})
    enc.load("cpu")
    out = enc.encode([enc.prepare(dialogue, 0)])[0]
    assert out.frames is None and enc.frame_dim is None
    np.testing.assert_allclose(out.layers[1], out.pooled, atol=1e-5)


def test_missing_weights_one_line() -> None:
    enc = build_encoder("audio", "microsoft/wavlm-large")
    with pytest.raises(WeightsMissing) as err:
        enc.check()
    msg = str(err.value)
    assert "\n" not in msg and "microsoft/wavlm-large" in msg and "--audio" in msg
