"""`erc predict --root`: new conversations are extracted with the run's recorded encoders."""

from __future__ import annotations

import pandas as pd

from erc.extract.datasets import load_dataset
from erc.extract.encoders import build_encoder
from erc.extract.run import RunConfig, extract
from erc.train.loop import TrainConfig
from tests.train_utils import fit
from tests.cli_utils import run_erc
from tests.fixtures_media import build_mini_meld


def test_predict_extracts_new_conversations_with_the_runs_encoders(tmp_path):
    root = build_mini_meld(tmp_path / "a")
    cache = tmp_path / "meld.h5"
    corpus = load_dataset("meld", root)
    extract(corpus, [build_encoder("audio", "mel", {"n_mels": "40"})], cache, RunConfig(device="cpu"), "test")
    cfg = TrainConfig(epochs=2, batch_size=2, patience=0, device="cpu", num_threads=1, quiet=True)
    fit(cache, "mlp", ["a"], {"hidden": "8"}, "full", cfg, tmp_path / "run")
    new_root = build_mini_meld(tmp_path / "b")
    res = run_erc("predict", "--run", str(tmp_path / "run"), "--dataset", "meld", "--root", str(new_root),
                  "--device", "cpu", cwd=tmp_path)
    assert res.code == 0, res.err
    df = pd.read_csv(tmp_path / "run" / "predictions-meld.csv")
    assert len(df) == len(corpus.utterances)
    assert set(df["pred"]) <= set(corpus.labels)
    from erc.features.reader import FeatureCache

    with FeatureCache(tmp_path / "run" / "predict" / "meld.h5") as fc:
        assert fc.group("audio", "mel").dim == 80  # n_mels=40 -> mean+std, as the run's cache
