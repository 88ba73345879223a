"""erc finetune: a tiny random BERT fine-tuned a few steps on the demo corpus (offline), its
record, extraction from it, resuming a killed run, and the label-leak guard on folds."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from erc.errors import UserError
from erc.extract.datasets.demo import load_demo
from erc.extract.datasets.manifest import load_manifest
from erc.features.schema import fold_group_name
from erc.features.reader import FeatureCache
from erc.finetune.config import FinetuneConfig
from erc.finetune.run import finetune
from erc.finetune.splits import plan_splits
from erc.train import leaks
from erc.train.dialogues import DialogueData
from erc.train.folds import FoldSpec
from tests.tiny_models import save_tiny_bert
from tests.cli_utils import assert_one_line_error, run_erc_here

SMALL = {"dialogues": "8", "seed": "3"}
FAST = dict(batch_size=8, lr=1e-3, precision="fp32", device="cpu", max_length=48, context=3, quiet=True)


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised 2-layer, 32-d BERT saved with MiniLM's tokenizer."""
    return save_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("demo") / "demo"
    load_demo(root, SMALL)
    return root


@pytest.fixture(scope="module")
def official(tiny_bert: Path, demo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny BERT fine-tuned 2 epochs on the demo's official train split."""
    out = tmp_path_factory.mktemp("ft") / "ft"
    finetune(load_demo(demo_root, SMALL), "text", str(tiny_bert), out, FinetuneConfig(epochs=2, **FAST))
    return out


@pytest.fixture(scope="module")
def cache(official: Path, tiny_bert: Path, demo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Frozen tiny BERT (same window) and the fine-tuned folder extracted into one cache."""
    path = tmp_path_factory.mktemp("cache") / "demo.h5"
    common = ("extract", "--dataset", "demo", "--root", str(demo_root), "--set", "dataset.dialogues=8",
              "--set", "dataset.seed=3", "--audio", "none", "--video", "none", "--out", str(path))
    frozen = run_erc_here(*common, "--text", str(tiny_bert), "--set", "text.context=3", "--set", "text.max_length=48",
                          "--set", "text.pooling=cls")
    assert frozen.code == 0, frozen.err
    tuned = run_erc_here(*common, "--text", str(official))
    assert tuned.code == 0, tuned.err
    return path


def test_finetune_writes_a_pretrained_folder_and_exactly_the_train_ids(official: Path, demo_root: Path) -> None:
    from transformers import AutoModel, AutoTokenizer

    assert (official / "config.json").is_file() and not (official / "checkpoints").exists()
    AutoModel.from_pretrained(official, local_files_only=True)
    AutoTokenizer.from_pretrained(official, local_files_only=True)
    record = json.loads((official / "finetune.json").read_text())
    corpus = load_demo(demo_root, SMALL)
    by_split = {s: [u.utterance_id for u in corpus.utterances if u.split == s] for s in ("train", "dev", "test")}
    assert record["labels_seen"]["train"] == by_split["train"]
    assert record["labels_seen"]["dev"] == by_split["dev"]
    assert not set(by_split["test"]) & set(record["labels_seen"]["train"] + record["labels_seen"]["dev"])
    assert record["split"] == {"kind": "official", "dev_carved": False, "dev_fraction": None}
    assert [e["epoch"] for e in record["dev_curve"]] == [1.0, 2.0]
    assert record["best_dev_weighted_f1"] == max(e["weighted_f1"] for e in record["dev_curve"])
    assert len(record["base_model"]["weights_sha256"]) == 64 and record["weights_sha256"] != record["base_model"]["weights_sha256"]
    assert record["input"] == {"context": 3, "context_future": 0, "speaker_names": True, "max_length": 48,
                               "pooling": "cls"}
    assert record["steps"] == 2 * -(-len(by_split["train"]) // 8)


def test_extraction_from_the_folder_differs_from_frozen_and_carries_the_record(cache: Path, official: Path,
                                                                                tiny_bert: Path) -> None:
    with FeatureCache(cache) as fc:
        assert set(fc.encoders("text")) == {"ft", tiny_bert.name}
        tuned, frozen = fc.pooled("text", "ft"), fc.pooled("text", tiny_bert.name)
        attrs = fc.group("text", "ft").attrs
        assert "finetune" not in fc.group("text", tiny_bert.name).attrs
    assert tuned.shape == frozen.shape and np.abs(tuned - frozen).max() > 1e-3
    record = json.loads(attrs["finetune"])
    assert record == json.loads((official / "finetune.json").read_text())
    config = json.loads(attrs["config"])
    assert config["context"] == 3 and config["pooling"] == "cls"  # the fine-tuning's window and pooling are the default
    info = run_erc_here("cache", "info", str(cache))
    assert info.code == 0 and "fine-tuned: from" in info.out and "labels of 45 train" in info.out


def test_guard_passes_the_official_split_and_refuses_folds(cache: Path) -> None:
    data = DialogueData(cache, {"text": "ft"})
    leaks.check_data(data)  # official test split: never seen
    with pytest.raises(UserError) as e:
        leaks.check_fold_groups(data, 3, "dialogue")
    msg = str(e.value)
    fold0 = leaks.scored_test_ids(data.for_fold(FoldSpec(3, 0, "dialogue")))
    seen = json.loads(data.groups["text"].attrs["finetune"])["labels_seen"]
    leaked = [u for u in fold0 if u in set(seen["train"] + seen["dev"])]
    assert "\n" not in msg and msg.startswith(f"fold 0 of 3 (dialogue): {len(leaked)} of the {len(fold0)} test")
    assert ", ".join(leaked[:3]) in msg
    with FeatureCache(cache) as fc:
        frozen = next(e for e in fc.encoders("text") if e != "ft")
    leaks.check_fold_groups(DialogueData(cache, {"text": frozen}), 3, "dialogue")  # a frozen encoder passes


def test_train_head_runs_on_the_official_split_and_refuses_folds_with_one_line(cache: Path, tmp_path: Path) -> None:
    common = ("train-head", "--model", "gru", "--features", str(cache), "--encoders", "text=ft", "--epochs", "1",
              "--seeds", "1", "--device", "cpu", "--quiet", "--set", "hidden=8")
    ran = run_erc_here(*common, "--out", str(tmp_path / "official"))
    assert ran.code == 0, ran.err
    refused = run_erc_here(*common, "--folds", "3", "--out", str(tmp_path / "folds"))
    assert_one_line_error(refused, "fold 0 of 3 (dialogue)", "had their labels seen")
    assert not (tmp_path / "folds" / "seed0").exists()


def test_guard_unit_counts_and_names_the_first_ids() -> None:
    attrs = {"text/a": {"finetune": json.dumps({"labels_seen": {"train": ["u1", "u2", "u3", "u4"], "dev": ["u9"]}})},
             "audio/mel": {"provenance": "{}"}}
    leaks.check_no_label_leak(attrs, ["x1", "x2"], "fold 0")
    with pytest.raises(UserError, match=r"^fold 2: 5 of the 6 test utterances .* text/a \(u1, u2, u9, \.\.\.\)"):
        leaks.check_no_label_leak(attrs, ["u1", "u2", "u9", "x", "u3", "u4"], "fold 2")


def test_a_dev_utterance_an_encoder_trained_on_is_a_warning_naming_it() -> None:
    attrs = {"text/a": {"finetune": json.dumps({"labels_seen": {"train": ["u1", "u2"], "dev": ["u9"]}})}}
    assert leaks.dev_label_warning(attrs, ["u9", "x"]) is None  # its own dev: chosen on, not trained on
    got = leaks.dev_label_warning(attrs, ["x", "u2", "u1"])
    assert got is not None and got.startswith("2 of the 3 dev utterances") and "(u2, u1)" in got
    both = leaks.dev_label_warning({**attrs, "audio/w": {"finetune": json.dumps({"labels_seen": {"train": ["u1"]}})}},
                                   ["x", "u2", "u1"])
    assert both is not None and "text/a (u2, u1), 1 by that of audio/w (u1):" in both  # every group is named


def test_per_fold_finetune_passes_each_fold_and_refuses_another_folds_group(tiny_bert: Path, demo_root: Path,
                                                                            cache: Path, tmp_path: Path) -> None:
    corpus = load_demo(demo_root, SMALL)
    out = tmp_path / "ft3"
    result = finetune(corpus, "text", str(tiny_bert), out, FinetuneConfig(epochs=1, **FAST), folds="3")
    plans = plan_splits(corpus, "3")
    for plan, record in zip(plans, result.records):
        ids = [u.utterance_id for u in corpus.utterances]
        assert record["labels_seen"]["train"] == [ids[i] for i in np.flatnonzero(plan.splits == "train")]
        assert record["split"]["fold"] == plan.fold and (out / plan.name / "config.json").is_file()
    top = json.loads((out / "finetune.json").read_text())
    assert top["kind"] == "folds" and [f["dir"] for f in top["folds"]] == ["fold0", "fold1", "fold2"]
    res = run_erc_here("extract", "--dataset", "demo", "--root", str(demo_root), "--set", "dataset.dialogues=8",
                       "--set", "dataset.seed=3", "--text", str(out), "--audio", "none", "--video", "none",
                       "--out", str(cache))
    assert res.code == 0, res.err
    with FeatureCache(cache) as fc:
        available = {"text": fc.encoders("text")}
    assert {fold_group_name("ft3", k) for k in range(3)} <= set(available["text"])
    assert leaks.fold_encoders(available, {"text": "ft3"}, 2) == {"text": "ft3@fold2"}  # the bare name
    first = DialogueData(cache, {"text": "ft3@fold0"}, folds=FoldSpec(3, 0))
    leaks.check_fold_groups(first, 3, "dialogue")  # each fold's own encoder never saw its test labels
    for k in range(3):
        view = leaks.fold_view(first, FoldSpec(3, k))
        assert view.encoders == {"text": f"ft3@fold{k}"} and view.folds == FoldSpec(3, k)
        with FeatureCache(cache) as fc:
            np.testing.assert_array_equal(view.pooled["text"].numpy(), fc.pooled("text", f"ft3@fold{k}"))
    with pytest.raises(UserError, match=r"of 4 \(dialogue\): .* fine-tuned on fold \d of 3 \(dialogue, fold seed 0\)"):
        leaks.check_fold_groups(first, 4, "dialogue")  # encoders made for 3 folds, run on 4
    with pytest.raises(UserError, match="^fold 0 of 3 .* fine-tuned on the official split"):  # before training
        leaks.check_fold_groups(DialogueData(cache, {"text": "ft"}), 3, "dialogue")
    with pytest.raises(UserError, match="fold 1 of 3"):
        leaks.check_data(DialogueData(cache, {"text": "ft3@fold0"}, folds=FoldSpec(3, 1)))
    with pytest.raises(UserError, match="the official test split"):  # a fold's encoder on the official split
        leaks.check_data(DialogueData(cache, {"text": "ft3@fold0"}))
    from erc.extract.finetuned import build_encoders

    assert [e.name for e in build_encoders("text", str(out / "fold2"))] == ["ft3@fold2"]  # one fold alone
    assert [e.name for e in build_encoders("text", str(out), {"name": "x"})] == ["x@fold0", "x@fold1", "x@fold2"]
    with pytest.raises(UserError, match="fold 5 needs its own text group 'ft3@fold5'"):
        leaks.fold_encoders(available, {"text": "ft3@fold0"}, 5)


def test_a_killed_finetuning_resumes_from_its_last_checkpoint(tiny_bert: Path, demo_root: Path, tmp_path: Path) -> None:
    from transformers import TrainerCallback

    corpus = load_demo(demo_root, SMALL)
    per_epoch = -(-sum(u.split == "train" for u in corpus.utterances) // 8)

    class Kill(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):  # noqa: ANN001, ANN003
            if state.global_step == per_epoch + 2:
                raise KeyboardInterrupt

    class Steps(TrainerCallback):
        seen: list[int] = []

        def on_step_end(self, args, state, control, **kw):  # noqa: ANN001, ANN003
            self.seen.append(state.global_step)

    out = tmp_path / "ft"
    cfg = FinetuneConfig(epochs=2, **FAST)
    with pytest.raises(KeyboardInterrupt):
        finetune(corpus, "text", str(tiny_bert), out, cfg, callbacks=[Kill()])
    assert (out / "checkpoints" / f"checkpoint-{per_epoch}").is_dir() and not (out / "finetune.json").exists()
    # weights trained on labels but no record yet: never extracted as if frozen
    killed = run_erc_here("extract", "--dataset", "demo", "--root", str(demo_root), "--set", "dataset.dialogues=8",
                          "--set", "dataset.seed=3", "--text", str(out), "--audio", "none", "--video", "none",
                          "--out", str(tmp_path / "killed.h5"))
    assert_one_line_error(killed, "unfinished `erc finetune`")
    steps = Steps()
    record = finetune(corpus, "text", str(tiny_bert), out, cfg, callbacks=[steps]).records[0]
    assert steps.seen == list(range(per_epoch + 1, 2 * per_epoch + 1))
    assert record["resumed_from"] == f"checkpoint-{per_epoch}" and record["steps"] == 2 * per_epoch
    assert [e["epoch"] for e in record["dev_curve"]] == [1.0, 2.0]  # epoch 1's dev score kept across the kill
    again = finetune(corpus, "text", str(tiny_bert), out, cfg)
    assert again.skipped == ["official"]
    with pytest.raises(UserError, match="another configuration"):
        finetune(corpus, "text", str(tiny_bert), out, FinetuneConfig(epochs=3, **FAST))


def _session_manifest(path: Path) -> Path:
    """3 sessions x 3 dialogues x 4 turns, IEMOCAP-style ids, official split: session 3 is test."""
    words = {"joy": "I love this", "anger": "I hate this", "neutral": "the bus is at noon"}
    rows = []
    for s in (1, 2, 3):
        for d in range(3):
            for t in range(4):
                label = list(words)[(s + d + t) % 3]
                rows.append({"dialogue_id": f"Ses0{s}F_d{d}", "utterance_id": f"Ses0{s}F_d{d}_{t}", "turn": t,
                             "speaker": "MF"[t % 2], "text": words[label], "label": label,
                             "split": "test" if s == 3 else "train"})
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def test_session_folds_refuse_official_features_and_run_on_per_session_ones(tiny_bert: Path, tmp_path: Path) -> None:
    manifest = _session_manifest(tmp_path / "ses.csv")
    corpus = load_manifest(manifest, {})
    cache_path = tmp_path / "ses.h5"
    cfg = FinetuneConfig(epochs=1, **FAST)
    finetune(corpus, "text", str(tiny_bert), tmp_path / "off", cfg)
    finetune(corpus, "text", str(tiny_bert), tmp_path / "per", cfg, folds="session")
    for folder in ("off", "per"):
        res = run_erc_here("extract", "--dataset", "manifest", "--root", str(manifest), "--text", str(tmp_path / folder),
                           "--audio", "none", "--video", "none", "--out", str(cache_path))
        assert res.code == 0, res.err
    data = DialogueData(cache_path, {"text": "off"})
    leaks.check_data(data)  # carved dev + official test: clean
    assert leaks.dev_warning(data) is None  # dev carved as the fine-tuning carved it
    other = leaks.dev_warning(DialogueData(cache_path, {"text": "off"}, dev_fraction=0.4))
    assert other is not None and "dev utterances were trained on by the fine-tuned encoder of text/off" in other
    with pytest.raises(UserError, match="session"):
        leaks.check_fold_groups(data, 3, "session")
    with FeatureCache(cache_path) as fc:
        available = {"text": fc.encoders("text")}
    for k in range(3):
        fold = DialogueData(cache_path, leaks.fold_encoders(available, {"text": "per@fold0"}, k),
                            folds=FoldSpec(3, k, "session"))
        leaks.check_data(fold)
        assert leaks.dev_warning(fold) is None  # each fold's dev carved as its fine-tuning's
    # the same through erc train-head: refused on the official fine-tuning, run on the per-session ones
    common = ("train-head", "--model", "gru", "--features", str(cache_path), "--folds", "session", "--epochs", "1",
              "--seeds", "1", "--device", "cpu", "--quiet", "--set", "hidden=8")
    refused = run_erc_here(*common, "--encoders", "text=off", "--out", str(tmp_path / "r-off"))
    assert_one_line_error(refused, "fold 0 of 3 (session)", "had their labels seen")
    assert not (tmp_path / "r-off" / "seed0").exists()
    ran = run_erc_here(*common, "--encoders", "text=per@fold0", "--out", str(tmp_path / "r-per"))
    assert ran.code == 0, ran.err
    for k in range(3):
        config = json.loads((tmp_path / "r-per" / "seed0" / f"fold{k}" / "config.json").read_text())
        assert config["encoders"] == {"text": f"per@fold{k}"}  # each fold reads its own encoder
    report = run_erc_here("report", str(tmp_path / "r-per"))
    assert report.code == 0, report.err
    import pandas as pd

    rows = pd.read_csv(tmp_path / "r-per" / "report.csv")
    assert len(rows) == 1 and int(rows["runs"].iloc[0]) == 3  # the folds' own groups: one configuration


def test_cli_finetune_on_the_demo_and_its_one_line_errors(tiny_bert: Path, demo_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli-ft"
    common = ("finetune", "--dataset", "demo", "--root", str(demo_root), "--dataset-set", "dialogues=8",
              "--dataset-set", "seed=3")
    res = run_erc_here(*common, "--text", str(tiny_bert), "--out", str(out), "--epochs", "1", "--context", "2",
                       "--max-length", "32", "--precision", "fp32", "--device", "cpu", "--quiet")
    assert res.code == 0, res.err
    assert (out / "config.json").is_file() and "erc extract" in res.err and f"--text {out}" in res.err
    assert json.loads((out / "finetune.json").read_text())["command"].startswith("erc finetune --dataset demo")
    assert_one_line_error(run_erc_here(*common, "--out", str(tmp_path / "x")), "--text ENCODER or --audio")
    assert_one_line_error(run_erc_here(*common, "--text", "mel", "--out", str(tmp_path / "x")), "not a text one")
    assert_one_line_error(run_erc_here(*common, "--audio", "mel", "--out", str(tmp_path / "x")), "Hugging Face")
    assert_one_line_error(run_erc_here(*common, "--text", str(tiny_bert), "--out", str(tmp_path / "x"),
                                       "--max-length", "32", "--folds", "2"), "--folds")
    assert_one_line_error(run_erc_here(*common, "--text", "roberta-large", "--out", str(tmp_path / "x")),
                          "weights not found", "erc finetune --download")
    assert_one_line_error(run_erc_here(*common, "--text", str(tiny_bert), "--out", str(tmp_path / "x"),
                                       "--max-length", "32", "--set", "warmup_ratio=2"), "warmup_ratio")
    # the model's 128 positions are fewer than --max-length's default 256: one line before any work
    assert_one_line_error(run_erc_here(*common, "--text", str(tiny_bert), "--out", str(tmp_path / "x")),
                          "128 token positions")


def test_guard_on_a_prediction_frame() -> None:
    import pandas as pd

    def check(attrs: dict, frame: pd.DataFrame) -> None:  # what check_cache_prediction runs on a cache's groups
        leaks.check_no_label_leak(attrs, leaks.predicted_test_ids(frame, ["joy"]), "erc predict (the test split)")

    tuned = {"text/ft": {"finetune": {"labels_seen": {"train": ["a"], "dev": []}}}}
    df = pd.DataFrame({"utterance_id": ["a", "b", "c"], "label": ["joy", "joy", ""], "split": ["test", "test", "test"]})
    with pytest.raises(UserError, match=r"erc predict \(the test split\): 1 of the 2 test utterances .*text/ft \(a\)"):
        check(tuned, df)
    check(tuned, df.assign(split=["train", "test", "test"]))  # scoring train rows is no test claim
    check({"text/minilm": {}}, df)  # frozen
    check(tuned, df.drop(columns=["label", "split"]))  # unlabelled: nothing scored


def test_guard_on_predicting_a_cache(cache: Path) -> None:
    import pandas as pd

    with FeatureCache(cache) as fc:
        ids = list(fc.utterances()["utterance_id"])
        splits = list(fc.utterances()["split"])
        df = pd.DataFrame({"utterance_id": ids, "label": ["joy"] * len(ids), "split": splits})
        leaks.check_cache_prediction(fc, {"text": "ft"}, df, ["joy"])  # the official test rows: clean
        with pytest.raises(UserError, match="erc predict"):
            leaks.check_cache_prediction(fc, {"text": "ft"}, df.assign(split="test"), ["joy"])


def test_fold_group_names_round_trip() -> None:
    from erc.features.schema import parse_fold_group

    for base, k in (("roberta-large-ft", 0), ("a@fold1", 12)):
        assert parse_fold_group(fold_group_name(base, k)) == (base, k)
    assert parse_fold_group("minilm") == ("minilm", None)


def test_a_checkpoint_missing_encoder_weights_is_refused_not_fine_tuned_from_random(tiny_bert: Path, demo_root: Path,
                                                                                    tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    broken = tmp_path / "renamed"
    shutil.copytree(tiny_bert, broken)
    state = load_file(broken / "model.safetensors")
    save_file({k.replace("encoder.layer.0.", "encoder.block.0."): v for k, v in state.items()}, broken / "model.safetensors",
              metadata={"format": "pt"})
    with pytest.raises(UserError, match="missing from the checkpoint"):
        finetune(load_demo(demo_root, SMALL), "text", str(broken), tmp_path / "out", FinetuneConfig(epochs=1, **FAST))
