"""Leave-one-session-out folds (IEMOCAP's alternative protocol): each session is the test set
exactly once, dev is carved from the training sessions by dialogue, and the CLI's
``--folds session`` runs one fold per session."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from erc.errors import UserError
from erc.train.dialogues import DialogueData
from erc.train.folds import FoldSpec, fold_splits, session_of
from tests.cli_utils import assert_one_line_error, run_erc
from tests.synth_cache import write_synthetic_cache

# 3 sessions: dialogue d belongs to session 1 + d % 3 (names in IEMOCAP's form)
NAMES = [f"Ses0{1 + d % 3}{'FM'[d % 2]}_impro{d:02d}" for d in range(15)]


def test_session_of_reads_iemocap_ids() -> None:
    assert session_of(["Ses01F_impro01", "Ses05M_script03_2", "Session3_x"]).tolist() == [1, 5, 3]
    with pytest.raises(UserError, match="dia1"):
        session_of(["Ses01F_impro01", "dia1"])


def test_each_session_is_the_test_set_once_and_dev_comes_from_the_training_sessions() -> None:
    codes = np.repeat(np.arange(15), 4)  # 15 dialogues of 4 utterances
    sessions = session_of(NAMES)[codes]
    tested = []
    for k in range(3):
        splits = fold_splits(codes, FoldSpec(3, k, "session"), NAMES, dev_fraction=0.2)
        assert set(sessions[splits == "test"].tolist()) == {k + 1}  # the k-th session, all of it
        assert (splits[sessions == k + 1] == "test").all()
        assert k + 1 not in set(sessions[splits == "dev"].tolist())  # dev from the other sessions
        dev_dialogues = set(codes[splits == "dev"].tolist())
        assert len(dev_dialogues) == 2  # 20 % of the 10 training dialogues, whole dialogues
        for d in range(15):
            assert len(set(splits[codes == d].tolist())) == 1
        tested.append(set(codes[splits == "test"].tolist()))
    assert sorted(d for t in tested for d in t) == list(range(15))


def test_session_folds_refuse_a_wrong_count_or_foreign_ids() -> None:
    codes = np.arange(15)
    with pytest.raises(UserError, match="3 session"):
        fold_splits(codes, FoldSpec(5, 0, "session"), NAMES)
    with pytest.raises(UserError, match="d0"):
        fold_splits(codes, FoldSpec(3, 0, "session"), [f"d{i}" for i in range(15)])


@pytest.fixture(scope="module")
def session_cache(tmp_path_factory):
    path = write_synthetic_cache(tmp_path_factory.mktemp("loso") / "c.h5", n_dialogues=15, lengths=(3, 5),
                                 dims={"text": 8}, seed=2)
    with h5py.File(path, "r+") as f:  # rename the dialogues into IEMOCAP's ids
        old = [x.decode() for x in f["utterances/dialogue_id"][()]]
        new = np.asarray([NAMES[int(d[1:])] for d in old], dtype=object)
        del f["utterances/dialogue_id"]
        f["utterances"].create_dataset("dialogue_id", data=new, dtype=h5py.string_dtype())
    return path


def test_dialogue_data_for_fold_uses_the_sessions(session_cache) -> None:
    d = DialogueData(session_cache, ["text"], folds=FoldSpec(3, 1, "session"))
    test = {d.dialogue_names[c] for c in d.dialogue_codes[d.utterances_in("test")]}
    assert test and all(name.startswith("Ses02") for name in test)
    other = d.for_fold(FoldSpec(3, 2, "session"))
    assert all(other.dialogue_names[c].startswith("Ses03") for c in other.dialogue_codes[other.utterances_in("test")])


def test_cli_folds_session_runs_one_fold_per_session(session_cache, tmp_path) -> None:
    out = tmp_path / "run"
    res = run_erc("train-head", "--model", "mlp", "--features", str(session_cache), "--folds", "session",
                  "--seeds", "1", "--epochs", "1", "--set", "hidden=8", "--out", str(out), "--quiet")
    assert res.code == 0, res.err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["grouping"] == "session" and summary["folds"] == 3 and len(summary["runs"]) == 3
    folds = [json.loads((out / "seed0" / f"fold{k}" / "config.json").read_text())["folds"] for k in range(3)]
    assert [f["fold"] for f in folds] == [0, 1, 2] and {f["grouping"] for f in folds} == {"session"}
    bad = run_erc("train-head", "--model", "mlp", "--features", str(session_cache), "--folds", "sessionz")
    assert_one_line_error(bad, "--folds")
