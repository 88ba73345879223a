"""The built-in demo corpus end to end: extract every modality, then every head beats the
majority class by a wide margin on test (dev-selected)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score

from erc.extract.datasets import load_dataset
from erc.extract.encoders import build_encoder
from erc.extract.run import RunConfig, extract
from erc.train.dialogues import DialogueData
from erc.train.config import TrainConfig
from tests.train_utils import fit

SMALL = {
    "mlp": {"hidden": "64"},
    "gru": {"hidden": "32", "proj": "64"},
    "matav": {"dim": "32", "hidden": "32", "fusion_layers": "2", "fusion_heads": "2", "queue_size": "128",
              "mamba_layers": "1"},
    "jfm": {"text_model": "", "audio_model": "", "layer_dim": "32", "layer_heads": "2", "layer_ff": "64",
            "extractor_dim": "32", "extractor_heads": "2", "extractor_ff": "64", "extractor_layers": "1",
            "blocks": "1", "patch_len": "8"},
    "deepmsi": {"dim": "32", "hidden": "64", "vsc": "frames"},  # the demo's faces video: one vector a frame
}


@pytest.fixture(scope="module")
def demo_cache(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("demo")
    # 60 dialogues (dev 6, test 12): with 30, dev is 3 dialogues of two moods, and the dev-selected
    # epoch can be one that fails on test (deepmsi, seed 0: dev W-F1 85.7 at epoch 5, test 8.5)
    corpus = load_dataset("demo", tmp / "demo", {"dialogues": "60"})
    encoders = [build_encoder("text", "minilm"), build_encoder("audio", "mel"),
                build_encoder("video", "faces", {"frames": "6"})]
    out = tmp / "demo.h5"
    extract(corpus, encoders, out, RunConfig(device="cpu"), "test")
    return out


def _majority_wf1(cache) -> float:
    d = DialogueData(cache, ["text"])
    major = int(np.argmax(d.label_counts("train").numpy()))
    y = d.y.numpy()[d.utterances_in("test")]
    return float(f1_score(y, np.full_like(y, major), average="weighted"))


@pytest.mark.parametrize("head", list(SMALL))
def test_every_head_beats_the_majority_class_on_the_demo_corpus(head, demo_cache, tmp_path):
    cfg = TrainConfig(epochs=25, batch_size=4, lr=2e-3, patience=0, device="cpu", num_threads=1, quiet=True)
    result = fit(demo_cache, head, ["t", "a", "v"], SMALL[head], "full", cfg, tmp_path / head)
    majority = _majority_wf1(demo_cache)
    assert result.test["weighted_f1"] > majority + 0.3, (result.test["weighted_f1"], majority)
