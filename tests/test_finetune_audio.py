"""erc finetune --audio: a tiny random wav2vec2 fine-tuned one epoch on the demo's clips (offline),
then extracted; its features differ from the frozen model's."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from erc.extract.datasets.demo import load_demo
from erc.features.reader import FeatureCache
from erc.finetune.config import FinetuneConfig
from erc.finetune.run import finetune
from tests.cli_utils import run_erc_here

SMALL = {"dialogues": "4", "seed": "5"}


def _tiny_wav2vec2(folder: Path) -> Path:
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    torch.manual_seed(0)
    Wav2Vec2Model(Wav2Vec2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                 conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
                                 feat_extract_norm="layer", do_stable_layer_norm=True)).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True,
                             return_attention_mask=True).save_pretrained(folder)
    return folder


def test_audio_finetune_then_extract(tmp_path: Path) -> None:
    root = tmp_path / "demo"
    corpus = load_demo(root, SMALL)
    base = _tiny_wav2vec2(tmp_path / "tiny-w2v")
    out = tmp_path / "w2v-ft"
    cfg = FinetuneConfig(epochs=1, batch_size=8, lr=1e-3, precision="fp32", device="cpu", max_seconds=2.0, quiet=True)
    record = finetune(corpus, "audio", str(base), out, cfg).records[0]
    assert record["modality"] == "audio" and record["input"] == {"max_seconds": 2.0}
    assert record["labels_seen"]["train"] == [u.utterance_id for u in corpus.utterances if u.split == "train"]
    assert (out / "preprocessor_config.json").is_file()
    cache = tmp_path / "demo.h5"
    for model in (base, out):
        res = run_erc_here("extract", "--dataset", "demo", "--root", str(root), "--set", "dataset.dialogues=4",
                           "--set", "dataset.seed=5", "--text", "none", "--video", "none", "--audio", str(model),
                           "--set", "audio.max_seconds=2", "--out", str(cache))
        assert res.code == 0, res.err
    with FeatureCache(cache) as fc:
        tuned, frozen = fc.pooled("audio", "w2v-ft"), fc.pooled("audio", "tiny-w2v")
        assert json.loads(fc.group("audio", "w2v-ft").attrs["finetune"])["weights_sha256"] == record["weights_sha256"]
    assert np.abs(tuned - frozen).max() > 1e-3
