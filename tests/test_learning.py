"""Heads learn what the synthetic caches make learnable: labels from features, and labels that
only dialogue context reveals (context heads must beat context-free ones)."""

from __future__ import annotations

import numpy as np
import pytest

from erc.train.config import TrainConfig
from tests.train_utils import fit
from tests.synth_cache import write_synthetic_cache

MODS = ["t", "a", "v"]
DIMS = {"text": 8, "audio": 8, "video": 8}
SMALL = {"mlp": {"hidden": "32"}, "gru": {"hidden": "16", "proj": "32"},
         "matav": {"dim": "16", "hidden": "16", "fusion_layers": "1", "fusion_heads": "2", "queue_size": "64",
                   "mamba_layers": "1", "dropout": "0.0"}}


def _cfg(epochs: int = 20) -> TrainConfig:
    return TrainConfig(epochs=epochs, batch_size=8, lr=3e-3, patience=0, device="cpu", num_threads=1, quiet=True)


def _majority_accuracy(cache) -> float:
    from erc.train.dialogues import DialogueData

    d = DialogueData(cache, ["text"])
    train_major = int(np.argmax(d.label_counts("train").numpy()))
    y = d.y.numpy()[d.utterances_in("test")]
    return float((y == train_major).mean())


@pytest.fixture(scope="module")
def signal_cache(tmp_path_factory):
    return write_synthetic_cache(tmp_path_factory.mktemp("sig") / "sig.h5", n_dialogues=30, lengths=(4, 8), dims=DIMS, seed=4)


@pytest.fixture(scope="module")
def context_cache(tmp_path_factory):
    return write_synthetic_cache(tmp_path_factory.mktemp("ctx") / "ctx.h5", n_dialogues=96, lengths=(4, 10), dims=DIMS,
                                 context_only=True, seed=0)


@pytest.mark.parametrize("head", ["mlp", "gru"])
def test_heads_beat_majority_on_feature_signal(head, signal_cache, tmp_path):
    r = fit(signal_cache, head, MODS, SMALL[head], "full", _cfg(15), tmp_path / head)
    majority = _majority_accuracy(signal_cache)
    assert r.test["accuracy"] > majority + 0.4, (r.test["accuracy"], majority)
    assert r.test["weighted_f1"] > 0.7


@pytest.fixture(scope="module")
def context_scores(context_cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("ctxruns")
    return {h: fit(context_cache, h, MODS, SMALL[h], "full", _cfg(40), out / h).test["accuracy"] for h in ("mlp", "gru")}


def test_context_only_labels_need_a_context_head(context_scores):
    assert context_scores["gru"] > 0.85, context_scores
    assert context_scores["gru"] > context_scores["mlp"] + 0.3, context_scores


def test_matav_mamba_uses_context(context_cache, tmp_path):
    pytest.importorskip("erc.heads.matav")
    full = fit(context_cache, "matav", MODS, SMALL["matav"], "full", _cfg(40), tmp_path / "full")
    flat = fit(context_cache, "matav", MODS, SMALL["matav"], "no-mamba", _cfg(40), tmp_path / "flat")
    assert full.extra["mamba_backend"] and full.extra["mamba_backend"] != ["none"]
    assert full.test["accuracy"] > flat.test["accuracy"] + 0.2, (full.test, flat.test)
