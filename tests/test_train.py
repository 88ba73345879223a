"""train_run: the run directory, dev-only model selection, resume, and cache compatibility."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from erc.errors import UserError
from erc.train.dialogues import DialogueData
from erc.features.reader import FeatureCache
from erc.train.metrics import classification_metrics
from erc.apply import Predictor
from erc.train.predictions import write_predictions
from erc.train.trained import check_compatible, load_run
from erc.train.config import TrainConfig
from erc.train.inference import split_probs
from tests.train_utils import fit, fit_folds, fit_seeds
from tests.synth_cache import TinyHead, write_synthetic_cache

FAST = dict(epochs=8, batch_size=4, lr=3e-3, patience=0, device="cpu", num_threads=1, quiet=True)
FILES = ("config.json", "provenance.json", "metrics.json", "epochs.csv", "predictions.csv", "best.pt", "done")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return write_synthetic_cache(tmp_path_factory.mktemp("tr") / "c.h5", n_dialogues=20, lengths=(3, 8),
                                 frames={"audio": 4}, noise=2.0, seed=2)


@pytest.fixture(scope="module")
def run(cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "tiny"
    return fit(cache, TinyHead, ["t", "a"], {"hidden": "8"}, "full", TrainConfig(**FAST), out)


def test_run_writes_every_file(run):
    for name in FILES:
        assert (run.run_dir / name).exists(), name
    cfg = json.loads((run.run_dir / "config.json").read_text())
    assert cfg["head_config"]["hidden"] == 8 and cfg["encoders"] == {"text": "syn-text", "audio": "syn-audio"}
    assert cfg["config_hash"] == run.config_hash and cfg["train"]["epochs"] == 8
    prov = json.loads((run.run_dir / "provenance.json").read_text())
    assert prov["groups"]["text"]["encoder"] == "syn-text" and prov["groups"]["text"]["dim"] == 16
    assert prov["cache_attrs"]["dataset"] == "synthetic"
    m = json.loads((run.run_dir / "metrics.json").read_text())
    assert set(m["test"]["per_class_f1"]) == {"c0", "c1", "c2", "c3"} and len(m["test"]["confusion"]) == 4
    assert m["mamba_backend"] == []
    preds = pd.read_csv(run.run_dir / "predictions.csv")
    assert set(preds["split"]) == {"dev", "test"}
    assert {"utterance_id", "dialogue_id", "label", "pred", "p_c0", "p_c3"} <= set(preds.columns)
    assert np.allclose(preds[[f"p_c{i}" for i in range(4)]].sum(axis=1), 1, atol=1e-4)
    state = torch.load(run.run_dir / "best.pt", weights_only=True)
    assert "state_dict" in state and state["config"]["config_hash"] == run.config_hash


def test_test_is_scored_at_the_best_dev_epoch(run, cache):
    epochs = pd.read_csv(run.run_dir / "epochs.csv")
    m = json.loads((run.run_dir / "metrics.json").read_text())
    assert len(epochs) == 8
    assert m["best_epoch"] == int(epochs.loc[epochs["dev_weighted_f1"].idxmax(), "epoch"])
    assert m["dev"]["weighted_f1"] == pytest.approx(epochs["dev_weighted_f1"].max())
    # reloading best.pt reproduces the reported test score
    loaded = load_run(run.run_dir)
    data = DialogueData(cache, loaded.encoders)
    got = split_probs(loaded.head, data, "test", torch.device("cpu"))
    y = data.y.numpy()[got.rows]
    again = classification_metrics(y[y >= 0], got.probs[y >= 0].argmax(1), data.labels)
    assert again["weighted_f1"] == pytest.approx(m["test"]["weighted_f1"])


def test_rerun_skips_and_changed_config_retrains(run, cache):
    stamp = (run.run_dir / "done").stat().st_mtime_ns
    again = fit(cache, TinyHead, ["text", "audio"], {"hidden": "8"}, "full", TrainConfig(**FAST), run.run_dir)
    assert again.skipped and again.best_epoch == run.best_epoch
    assert (run.run_dir / "done").stat().st_mtime_ns == stamp


def predict_cache(run_dir, cache_path, out=None):
    """Every utterance of a cache predicted by the run, written to ``out`` (what `erc predict --features` does)."""
    df = Predictor.load(run_dir, device="cpu", load_encoders=False).predict_cache(cache_path)
    return write_predictions(df, out or run_dir / "predictions-cache.csv")


def test_other_cache_is_refused(run, tmp_path):
    other = write_synthetic_cache(tmp_path / "other.h5", n_dialogues=6, dims={"text": 32, "audio": 12}, seed=2)
    loaded = load_run(run.run_dir)
    with FeatureCache(other) as fc, pytest.raises(UserError, match="dim 32"):
        check_compatible(loaded, fc)
    renamed = write_synthetic_cache(tmp_path / "enc.h5", n_dialogues=6, encoders={"audio": "wavlm"}, seed=2)
    with pytest.raises(UserError, match="syn-audio"):
        predict_cache(run.run_dir, renamed)
    classes = write_synthetic_cache(tmp_path / "cls.h5", n_dialogues=6, n_classes=3, seed=2)
    with pytest.raises(UserError, match="labels"):
        predict_cache(run.run_dir, classes)


def test_predict_cache_writes_every_utterance(run, cache, tmp_path):
    path = predict_cache(run.run_dir, cache, tmp_path / "p.csv")
    df = pd.read_csv(path)
    assert len(df) == len(FeatureCache(cache)) and set(df["split"]) == {"train", "dev", "test"}


def test_frames_head_and_user_errors(cache, tmp_path):
    r = fit(cache, TinyHead, ["t", "a"], {}, "frames", TrainConfig(**{**FAST, "epochs": 2}), tmp_path / "fr")
    assert json.loads((r.run_dir / "config.json").read_text())["inputs"]["frame_dims"] == {"audio": 4}
    with pytest.raises(UserError, match="variant"):
        fit(cache, TinyHead, ["t"], {}, "nope", TrainConfig(**FAST), tmp_path / "x")
    with pytest.raises(UserError, match="unknown"):
        fit(cache, TinyHead, ["t"], {"depth": "3"}, "full", TrainConfig(**FAST), tmp_path / "x")
    with pytest.raises(UserError, match="unknown head"):
        fit(cache, "no-such-head", ["t"], {}, "full", TrainConfig(**FAST), tmp_path / "x")


def test_seeds_and_folds(cache, tmp_path):
    cfg = TrainConfig(**{**FAST, "epochs": 2})
    res = fit_seeds(cache, "mlp", ["text"], {}, "full", cfg, tmp_path / "s", seeds=[0, 1])
    assert [p.name for p in sorted((tmp_path / "s").glob("seed*"))] == ["seed0", "seed1"]
    assert res.summary["test"]["weighted_f1"]["std"] >= 0 and len(res.test_values()) == 2
    assert (tmp_path / "s" / "summary.json").exists()
    cv = fit_folds(cache, TinyHead, ["text"], {}, "full", cfg, tmp_path / "cv", folds=3)
    assert len(cv.runs) == 3 and cv.summary["grouping"] == "dialogue"
    tested = set()
    for r in cv.runs:
        tested |= set(pd.read_csv(r.run_dir / "predictions.csv").query("split == 'test'")["dialogue_id"])
    assert len(tested) == 20


def test_deterministic_runs_repeat(cache, tmp_path):
    cfg = TrainConfig(**{**FAST, "epochs": 3, "deterministic": True})
    a = fit(cache, "gru", ["text"], {}, "full", cfg, tmp_path / "a")
    b = fit(cache, "gru", ["text"], {}, "full", cfg, tmp_path / "b")
    assert a.test["weighted_f1"] == b.test["weighted_f1"]
    assert not torch.are_deterministic_algorithms_enabled()


def test_bf16_training_precision_runs_and_scores(tmp_path):
    from erc.train.config import TrainConfig
    from tests.train_utils import fit
    from tests.synth_cache import write_synthetic_cache

    cache = write_synthetic_cache(tmp_path / "c.h5", n_dialogues=12, lengths=(3, 6), dims={"text": 8}, seed=1)
    cfg = TrainConfig(epochs=2, batch_size=4, lr=1e-3, patience=0, device="cpu", num_threads=1, quiet=True,
                      precision="bf16")
    result = fit(cache, "gru", ["t"], {"hidden": "8", "proj": "16"}, "full", cfg, tmp_path / "run")
    assert 0.0 <= result.test["weighted_f1"] <= 1.0
