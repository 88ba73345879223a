"""`erc predict`: new conversations are extracted with the run's recorded encoders; bad input is one
`erc: error:` line."""

from __future__ import annotations

import pandas as pd
import pytest

from erc.extract.datasets import load_dataset
from erc.extract.encoders import build_encoder
from erc.extract.run import RunConfig, extract
from erc.train.config import TrainConfig
from tests.cli_utils import assert_one_line_error, run_erc, run_erc_here
from tests.fixtures_media import build_mini_meld
from tests.train_utils import fit


@pytest.fixture(scope="module")
def mel_run(tmp_path_factory):
    """An mlp trained on mini MELD's log-mel audio (n_mels=40), and a second copy of the corpus."""
    tmp = tmp_path_factory.mktemp("predict")
    root = build_mini_meld(tmp / "a")
    cache = tmp / "meld.h5"
    extract(load_dataset("meld", root), [build_encoder("audio", "mel", {"n_mels": "40"})], cache, RunConfig(device="cpu"), "test")
    cfg = TrainConfig(epochs=2, batch_size=2, patience=0, device="cpu", num_threads=1, quiet=True)
    fit(cache, "mlp", ["a"], {"hidden": "8"}, "full", cfg, tmp / "run")
    return {"tmp": tmp, "run": tmp / "run", "new": build_mini_meld(tmp / "b"), "n": len(load_dataset("meld", root).utterances)}


def test_media_the_encoders_cannot_read_is_one_error_line_unless_skipped(mel_run) -> None:
    tmp = mel_run["tmp"]
    args = ("predict", "--run", str(mel_run["run"]), "--dataset", "meld", "--root", str(mel_run["new"]), "--device", "cpu",
            "--quiet")
    bad = run_erc(*args, cwd=tmp)  # the installed entry point's code path
    assert_one_line_error(bad, "2 utterance(s) have audio media the run's mel encoder cannot read", "--skip-bad-media")
    res = run_erc_here(*args, "--skip-bad-media")
    assert res.code == 0, res.err
    assert "note: 2 of 9 utterances have no audio" in res.out  # one clip missing, one corrupt
    df = pd.read_csv(mel_run["run"] / "predictions-meld.csv")
    assert len(df) == mel_run["n"]
    assert "test: W-F1" in res.out  # MELD's labels are present: scored


def test_with_features_the_new_conversations_are_extracted_into_that_cache_first(mel_run) -> None:
    from erc.features.reader import FeatureCache

    tmp = mel_run["tmp"]
    cache = tmp / "new.h5"
    res = run_erc_here("predict", "--run", str(mel_run["run"]), "--dataset", "meld", "--root", str(mel_run["new"]),
                     "--features", str(cache), "--device", "cpu", "--out", str(tmp / "p.jsonl"), "--quiet",
                     "--skip-bad-media")
    assert res.code == 0, res.err
    with FeatureCache(cache) as fc:
        assert fc.group("audio", "mel").dim == 80  # n_mels=40 -> mean+std, as the run's cache
    assert len(pd.read_json(tmp / "p.jsonl", lines=True)) == mel_run["n"]


def test_a_run_folder_without_best_pt_is_one_error_line(tmp_path) -> None:
    (tmp_path / "r").mkdir()
    assert_one_line_error(run_erc_here("predict", "--run", str(tmp_path / "r")), "not a finished run")


def test_a_manifest_without_text_is_one_error_line(mel_run, tmp_path) -> None:
    m = tmp_path / "new.csv"
    m.write_text("dialogue_id,utterance_id,audio\nd,u0,x.wav\n")
    res = run_erc_here("predict", "--run", str(mel_run["run"]), "--dataset", "manifest", "--root", str(m), "--device", "cpu")
    assert_one_line_error(res, "lacks required column(s): text")


def test_an_unknown_format_is_one_error_line(mel_run, tmp_path) -> None:
    res = run_erc_here("predict", "--run", str(mel_run["run"]), "--features", str(mel_run["tmp"] / "meld.h5"),
                     "--format", "xlsx")
    assert_one_line_error(res, "--format must be csv or jsonl")


def test_a_runs_predictions_csv_and_erc_predicts_csv_share_columns_and_probabilities(mel_run) -> None:
    tmp = mel_run["tmp"]
    out = tmp / "from-cache.csv"
    res = run_erc_here("predict", "--run", str(mel_run["run"]), "--features", str(tmp / "meld.h5"), "--device", "cpu",
                       "--out", str(out))
    assert res.code == 0, res.err
    trained = pd.read_csv(mel_run["run"] / "predictions.csv")
    predicted = pd.read_csv(out)
    assert list(trained.columns) == list(predicted.columns)
    assert list(trained.columns[:7]) == ["utterance_id", "dialogue_id", "turn", "speaker", "label", "split", "pred"]
    both = trained.merge(predicted, on="utterance_id", suffixes=("_run", "_predict"))
    assert len(both) == len(trained)  # every dev / test row of the run is predicted
    probs = [c for c in trained.columns if c.startswith("p_")]
    for c in probs:  # one inference path: the same probabilities (up to the CSV's 6 digits)
        assert (both[f"{c}_run"] - both[f"{c}_predict"]).abs().max() <= 2e-6
    assert (both["pred_run"] == both["pred_predict"]).all()
