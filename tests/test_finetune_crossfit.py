"""erc finetune --crossfit K: encoders on parts of the official train, one cache group whose every
train utterance is encoded by an encoder that never saw its label, and the leak guard on it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from erc.extract.datasets.demo import load_demo
from erc.features.reader import FeatureCache
from erc.finetune.config import FinetuneConfig
from erc.finetune.run import finetune
from erc.finetune.splits import HELD, crossfit_plans, official_plan
from tests.cli_utils import assert_one_line_error, run_erc_here
from tests.tiny_models import save_tiny_bert

SMALL = {"dialogues": "8", "seed": "3"}
FAST = dict(batch_size=8, lr=1e-3, precision="fp32", device="cpu", max_length=48, context=2, quiet=True)
DEMO = ("--dataset", "demo", "--set", "dataset.dialogues=8", "--set", "dataset.seed=3")


@pytest.fixture(scope="module")
def crossfit(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(demo root, the tiny BERT cross-fitted over 2 parts for 1 epoch, a cache with its group and
    each sub-encoder's own group)."""
    bert = save_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))
    root = tmp_path_factory.mktemp("demo") / "demo"
    load_demo(root, SMALL)
    out = tmp_path_factory.mktemp("ft") / "cf"
    finetune(load_demo(root, SMALL), "text", str(bert), out, FinetuneConfig(epochs=1, **FAST), crossfit=2)
    cache = tmp_path_factory.mktemp("cache") / "demo.h5"
    common = ("extract", *DEMO, "--root", str(root), "--audio", "none", "--video", "none", "--out", str(cache))
    for folder, name in ((out, "cf"), (out / "part0", "p0"), (out / "part1", "p1"), (out / "full", "full")):
        got = run_erc_here(*common, "--text", str(folder), "--set", f"text.name={name}")
        assert got.code == 0, got.err
    return root, out, cache


def test_crossfit_parts_hold_out_disjoint_train_dialogues_and_keep_the_official_dev(tmp_path: Path) -> None:
    corpus = load_demo(tmp_path / "demo", {"dialogues": "12", "seed": "1"})
    official = official_plan(corpus)
    plans = crossfit_plans(corpus, 3)
    assert [p.name for p in plans] == ["part0", "part1", "part2", "full"]
    assert np.array_equal(plans[-1].splits, official.splits)
    train = official.splits == "train"
    held = [p.splits == HELD for p in plans[:3]]
    assert not (held[0] & held[1]).any() and not (held[1] & held[2]).any() and not (held[0] & held[2]).any()
    assert np.array_equal(held[0] | held[1] | held[2], train)  # every train utterance held out exactly once
    dialogues = np.asarray([u.dialogue_id for u in corpus.utterances])
    for p, h in zip(plans, held):
        assert h.any() and not set(dialogues[h]) & set(dialogues[p.splits == "train"])  # whole dialogues
        assert np.array_equal(p.splits == "dev", official.splits == "dev")
        assert np.array_equal(p.splits == "test", official.splits == "test")


def test_a_crossfit_group_takes_each_row_from_the_encoder_that_did_not_see_its_label(
        crossfit: tuple[Path, Path, Path]) -> None:
    _, out, cache = crossfit
    records = [json.loads((out / d / "finetune.json").read_text()) for d in ("part0", "part1", "full")]
    with FeatureCache(cache) as fc:
        ids = [str(u) for u in fc.utterances()["utterance_id"]]
        got = {g: fc.pooled("text", g) for g in ("cf", "p0", "p1", "full")}
        attrs = json.loads(fc.group("text", "cf").attrs["finetune"])
    source = np.full(len(ids), "full", dtype=object)
    for name, rec in zip(("p0", "p1"), records):
        source[np.isin(ids, rec["held_out"])] = name
    assert (source == "p0").any() and (source == "p1").any() and (source == "full").any()
    for r, name in enumerate(source):  # equal up to batching (other padding, other batch-mates)
        assert np.allclose(got["cf"][r], got[name][r], atol=1e-4), (r, name)
        other = "full" if name != "full" else "p0"
        assert not np.allclose(got["cf"][r], got[other][r], atol=1e-3), (r, other)
    seen = {name: set(rec["labels_seen"]["train"]) for name, rec in zip(("p0", "p1", "full"), records)}
    assert not any(ids[r] in seen[name] for r, name in enumerate(source))  # no row fitted to its own label
    for name, rec in zip(("p0", "p1"), records):  # and a part's rows: not even its dev (selection) labels
        assert not set(ids[r] for r in np.flatnonzero(source == name)) & set(rec["labels_seen"]["dev"])
    assert attrs["kind"] == "crossfit" and len(attrs["encoders"]) == 3
    assert set(attrs["labels_seen"]["train"]) == set(records[2]["labels_seen"]["train"])  # the union: all of train
    assert not np.allclose(got["p0"], got["p1"])  # two encoders, two sets of weights


def test_the_guard_passes_a_crossfit_group_on_the_official_split_and_refuses_folds(
        crossfit: tuple[Path, Path, Path], tmp_path: Path) -> None:
    _, _, cache = crossfit
    common = ("train-head", "--features", str(cache), "--model", "mlp", "--seeds", "1", "--modalities", "t",
              "--encoders", "text=cf", "--epochs", "1")
    ok = run_erc_here(*common, "--out", str(tmp_path / "ok"))
    assert ok.code == 0, ok.err
    config = json.loads((tmp_path / "ok" / "seed0" / "config.json").read_text())
    assert not any("dev utterances" in w for w in config["warnings"])  # no part or full trained on dev
    root, _, _ = crossfit  # erc predict rebuilds the cross-fitted encoder: the same corpus scores the same
    pred = run_erc_here("predict", "--run", str(tmp_path / "ok" / "seed0"), "--dataset", "demo", "--root", str(root),
                        "--set", "dataset.dialogues=8", "--set", "dataset.seed=3", "--device", "cpu",
                        "--out", str(tmp_path / "pred.csv"), "--quiet")
    assert pred.code == 0, pred.err
    summary = json.loads((tmp_path / "ok" / "seed0" / "metrics.json").read_text())
    assert f"test: W-F1 {100 * summary['test']['weighted_f1']:.2f}" in pred.out, pred.out
    assert_one_line_error(run_erc_here(*common, "--folds", "3", "--out", str(tmp_path / "folds")),
                          "had their labels seen", "cross-fitted over 2 parts")


def test_crossfit_beside_folds_or_with_one_part_is_one_line(tmp_path: Path) -> None:
    common = ("finetune", "--dataset", "demo", "--text", "minilm", "--out", str(tmp_path / "x"))
    assert_one_line_error(run_erc_here(*common, "--crossfit", "2", "--folds", "3"), "--folds and --crossfit")
    assert_one_line_error(run_erc_here(*common, "--crossfit", "1"), "at least 2 parts")


def test_only_a_train_utterance_goes_to_a_part_encoder(crossfit: tuple[Path, Path, Path]) -> None:
    """A new conversation whose utterance id repeats a held-out train id is encoded by ``full``."""
    from erc.corpus import Utterance
    from erc.extract.finetuned import build_encoders

    _, out, _ = crossfit
    (enc,) = build_encoders("text", str(out))
    held = sorted(json.loads((out / "part1" / "finetune.json").read_text())["held_out"])[0]
    for split, want in (("train", 1), ("test", -1)):
        dlg = [Utterance(utterance_id=held, dialogue_id="d", turn=0, speaker="A", text="hi", label="", split=split)]
        assert enc.prepare(dlg, 0)[0] == want


def test_parts_of_another_crossfitting_are_refused_in_one_line(crossfit: tuple[Path, Path, Path],
                                                               tmp_path: Path) -> None:
    import shutil

    from erc.errors import UserError
    from erc.extract.finetuned import build_encoders
    from erc.extract.provenance import group_config_hash

    _, out, _ = crossfit
    (enc,) = build_encoders("text", str(out))
    copy = tmp_path / "cf"
    shutil.copytree(out, copy)
    path = copy / "part0" / "finetune.json"
    rec = json.loads(path.read_text())
    rec["held_out"] = rec["held_out"][1:]  # one train utterance left to the full encoder, which saw it
    path.write_text(json.dumps(rec))
    with pytest.raises(UserError, match="held out by no part"):
        build_encoders("text", str(copy))
    rec["held_out"] = rec["held_out"][:1] + rec["held_out"]
    rec["split"]["part"] = 1
    path.write_text(json.dumps(rec))
    with pytest.raises(UserError, match="is not part 0 of 2"):
        build_encoders("text", str(copy))
    # the routing is part of the group's config hash: another split of the parts re-extracts
    enc.held[0] = enc.held[0][1:]
    assert group_config_hash(enc, "float16") != group_config_hash(build_encoders("text", str(out))[0], "float16")


def test_a_crossfit_batch_holds_the_utterances_of_one_encoder(crossfit: tuple[Path, Path, Path]) -> None:
    from erc.extract.finetuned import build_encoders
    from erc.extract.plan import plan_batches

    root, out, _ = crossfit
    (enc,) = build_encoders("text", str(out))
    utts = load_demo(root, SMALL).utterances
    plan = plan_batches(enc, utts)
    assert sorted(r for b in plan for r in b) == list(range(len(utts)))  # every row once
    routes = [{enc.route(utts[r]) for r in b} for b in plan]
    assert all(len(r) == 1 for r in routes)
    assert {r for (r,) in routes} == {-1, 0, 1}


def test_new_conversations_load_only_the_full_encoder(crossfit: tuple[Path, Path, Path]) -> None:
    """erc predict on new conversations (routed to ``full``) never loads a part's weights; a
    held-out train utterance loads its part on first use."""
    from erc.corpus import Utterance
    from erc.extract.finetuned import build_encoders

    _, out, _ = crossfit
    (enc,) = build_encoders("text", str(out))
    enc.load("cpu")
    held = sorted(json.loads((out / "part1" / "finetune.json").read_text())["held_out"])[0]
    new = [Utterance(utterance_id=held, dialogue_id="d", turn=0, speaker="A", text="hi", label="", split="test")]
    enc.ready(new)
    enc.encode([enc.prepare(new, 0)])
    assert enc.full.model is not None and all(p.model is None for p in enc.parts)
    train = [Utterance(utterance_id=held, dialogue_id="d", turn=0, speaker="A", text="hi", label="", split="train")]
    enc.ready(train)
    enc.encode([enc.prepare(train, 0)])
    assert enc.parts[1].model is not None and enc.parts[0].model is None


def test_a_part_that_cannot_load_stops_the_extraction_in_one_line(crossfit: tuple[Path, Path, Path],
                                                                  tmp_path: Path) -> None:
    """Not a failed row per utterance: the part loads on the main thread, and its error is the run's."""
    import shutil

    root, out, _ = crossfit
    copy = tmp_path / "cf"
    shutil.copytree(out, copy)
    for f in (copy / "part0").glob("*.safetensors"):
        f.write_bytes(b"not a model")
    got = run_erc_here("extract", *DEMO, "--root", str(root), "--audio", "none", "--video", "none",
                       "--out", str(tmp_path / "c.h5"), "--text", str(copy))
    assert_one_line_error(got, "part0")
