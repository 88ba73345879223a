"""A trained run applied to conversations: the Python API, `erc predict` on an unlabelled manifest and
the labelled cache the conversation came from give the same probabilities; seed ensembles average.

The corpus: 4 dialogues x 3 utterances with real mp4 clips (a drawn face and a tone), extracted with
the offline encoders (MiniLM with one turn of dialogue context, log-mel, face descriptors), then
a tiny MaTAV trained with 2 seeds and a GRU that reads frames (attention pooling)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from erc.apply import Predictor
from erc.extract.datasets import load_dataset
from erc.extract.encoders import build_encoder
from erc.extract.in_memory import extract_in_memory
from erc.extract.run import RunConfig, extract
from erc.extract.datasets.synth import draw_face, tone, write_mp4
from erc.features.reader import FeatureCache
from erc.train.config import TrainConfig
from tests.cli_utils import run_erc, run_erc_here
from tests.train_utils import fit, fit_seeds

EMOTIONS = {"joy": 330.0, "sadness": 140.0}
SPLITS = ["train", "train", "dev", "test"]
TEXTS = {"joy": ["I love this", "what great news", "best day ever"],
         "sadness": ["I miss her", "this is so sad", "I feel terrible"]}
MATAV = {"dim": "16", "hidden": "16", "queue_size": "32", "fusion_layers": "1", "fusion_heads": "2", "mamba_layers": "1"}
GRU = {"hidden": "8", "proj": "16"}


def write_corpus(root: Path) -> Path:
    """``root/labelled.csv`` (+ ``clips/``): 4 dialogues x 3 utterances, labels alternating."""
    rng = np.random.default_rng(0)
    (root / "clips").mkdir(parents=True)
    rows = []
    for d in range(4):
        for t in range(3):
            label = "joy" if (d + t) % 2 == 0 else "sadness"
            clip = f"clips/d{d}_u{t}.mp4"
            face = np.stack([draw_face(label, 32, rng) for _ in range(4)])
            write_mp4(root / clip, face, 8, tone(EMOTIONS[label], 0.6, 16000, rng=rng), 16000)
            rows.append({"dialogue_id": f"d{d}", "utterance_id": f"d{d}_u{t}", "speaker": "AB"[t % 2],
                         "text": TEXTS[label][(d + t) % 3], "audio": clip, "video": clip, "label": label,
                         "split": SPLITS[d]})
    path = root / "labelled.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("apply")
    manifest = write_corpus(tmp / "corpus")
    corpus = load_dataset("manifest", manifest)
    encoders = [build_encoder("text", "minilm", {"context": "1"}), build_encoder("audio", "mel", {"n_mels": "20"}),
                build_encoder("video", "faces", {"frames": "3", "size": "32"})]
    cache = tmp / "labelled.h5"
    extract(corpus, encoders, cache, RunConfig(device="cpu"), "test")
    cfg = TrainConfig(epochs=2, batch_size=2, patience=0, device="cpu", num_threads=1, quiet=True)
    fit_seeds(cache, "matav", ["text", "audio", "video"], MATAV, "full", cfg, tmp / "matav", [0, 1])
    fit(cache, "gru", ["text", "audio", "video"], GRU, "party-attn", cfg, tmp / "gru")
    return {"tmp": tmp, "manifest": manifest, "cache": cache, "corpus": corpus}


def _test_dialogue(trained) -> list[dict]:
    df = pd.read_csv(trained["manifest"])
    return df[df["dialogue_id"] == "d3"].drop(columns=["label", "split"]).to_dict("records")


def test_api_erc_predict_on_an_unlabelled_manifest_and_the_labelled_cache_agree(trained) -> None:
    tmp, sweep = trained["tmp"], trained["tmp"] / "matav"
    conversation = _test_dialogue(trained)
    unlabelled = tmp / "corpus" / "new.csv"
    pd.DataFrame(conversation).to_csv(unlabelled, index=False)

    predictor = Predictor.load(sweep, device="cpu")
    assert predictor.n_runs == 2
    api = predictor.predict([{k: v for k, v in u.items() if k != "dialogue_id"} for u in conversation],
                            embeddings=True, base=tmp / "corpus")
    out = tmp / "new.jsonl"
    res = run_erc("predict", "--run", str(sweep), "--dataset", "manifest", "--root", str(unlabelled), "--device", "cpu",
                  "--out", str(out), "--with-embeddings", "--quiet", cwd=tmp)
    assert res.code == 0, res.err
    assert "2 run(s): seed0, seed1 (probabilities averaged)" in res.out
    assert "predicted labels of 3 unlabelled utterances" in res.out
    cli = pd.read_json(out, lines=True)
    cached = predictor.predict_cache(trained["cache"], embeddings=True)
    cached = cached[cached["dialogue_id"] == "d3"].reset_index(drop=True)

    cols = predictor.prob_columns
    assert list(cli.columns) == ["utterance_id", "dialogue_id", "turn", "speaker", "pred", *cols, "embedding"]
    assert list(api["dialogue_id"]) == ["d0"] * 3  # no dialogue_id given: the API names it
    assert list(api["utterance_id"]) == list(cli["utterance_id"]) == list(cached["utterance_id"]) == ["d3_u0", "d3_u1", "d3_u2"]
    np.testing.assert_allclose(api[cols].to_numpy(), cached[cols].to_numpy(), atol=1e-5)
    np.testing.assert_allclose(cli[cols].to_numpy(), cached[cols].to_numpy(), atol=1e-5)
    assert list(api["pred"]) == list(cli["pred"]) == list(cached["pred"])
    emb = np.stack(cached["embedding"])
    assert emb.shape == (3, 16)
    np.testing.assert_allclose(np.stack(api["embedding"]), emb, atol=1e-4)
    np.testing.assert_allclose(np.stack(cli["embedding"].to_list()), emb, atol=1e-4)


def test_a_head_reading_frames_predicts_the_same_from_the_api_and_the_cache(trained, monkeypatch) -> None:
    predictor = Predictor.load(trained["tmp"] / "gru", device="cpu")
    for enc in predictor.encoders:  # loaded once, by load(): predicting never loads weights again
        monkeypatch.setattr(enc, "load", lambda *a, **k: pytest.fail("an encoder was loaded again"))
    api = predictor.predict(_test_dialogue(trained), base=trained["tmp"] / "corpus")
    cached = predictor.predict_cache(trained["cache"])
    cached = cached[cached["dialogue_id"] == "d3"]
    np.testing.assert_allclose(api[predictor.prob_columns].to_numpy(), cached[predictor.prob_columns].to_numpy(),
                               atol=1e-5)


def test_in_memory_extraction_holds_what_the_cache_file_holds(trained) -> None:
    predictor = Predictor.load(trained["tmp"] / "gru", device="cpu")
    corpus = load_dataset("manifest", trained["manifest"])
    mem = extract_in_memory(corpus, predictor.encoders, frame_dtypes={"text": "float16", "audio": "float16",
                                                                      "video": "float16"})
    with FeatureCache(trained["cache"]) as fc:
        assert mem.utterances()["utterance_id"] == fc.utterances()["utterance_id"]
        for g in fc.groups():
            np.testing.assert_allclose(mem.pooled(g.modality, g.encoder), fc.pooled(g.modality, g.encoder), atol=1e-5)
            assert (mem.present(g.modality, g.encoder) == fc.present(g.modality, g.encoder)).all()
            (fa, oa), (fb, ob) = mem.frames(g.modality, g.encoder), fc.frames(g.modality, g.encoder)
            assert fa.dtype == fb.dtype and (oa == ob).all()
            np.testing.assert_allclose(fa.astype(np.float32), fb.astype(np.float32), atol=2e-3)


def test_a_sweep_folder_averages_its_seeds_probabilities(trained) -> None:
    sweep = trained["tmp"] / "matav"
    both = Predictor.load(sweep, device="cpu", load_encoders=False).predict_cache(trained["cache"])
    seeds = [Predictor.load(sweep / f"seed{k}", device="cpu", load_encoders=False).predict_cache(trained["cache"])
             for k in (0, 1)]
    cols = [c for c in both.columns if c.startswith("p_")]
    np.testing.assert_allclose(both[cols].to_numpy(), (seeds[0][cols].to_numpy() + seeds[1][cols].to_numpy()) / 2,
                               atol=1e-6)
    assert not np.allclose(seeds[0][cols].to_numpy(), seeds[1][cols].to_numpy())  # the seeds differ


def test_labelled_manifest_of_test_rows_only_is_predicted_and_scored(trained) -> None:
    tmp = trained["tmp"]
    df = pd.read_csv(trained["manifest"])
    only_test = tmp / "corpus" / "only_test.csv"
    df[df["split"] == "test"].to_csv(only_test, index=False)
    out = tmp / "only_test.csv"
    res = run_erc_here("predict", "--run", str(tmp / "matav" / "seed0"), "--dataset", "manifest", "--root", str(only_test),
                     "--device", "cpu", "--out", str(out), "--quiet")
    assert res.code == 0, res.err
    assert "test: W-F1" in res.out and "(3 labelled utterances)" in res.out
    with out.open() as fh:
        header = next(csv.reader(fh))
    assert header[:7] == ["utterance_id", "dialogue_id", "turn", "speaker", "label", "split", "pred"]
    assert list(pd.read_csv(out)["label"]) == list(df[df["split"] == "test"]["label"])
