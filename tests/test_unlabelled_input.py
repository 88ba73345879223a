"""Input for prediction needs no labels and no splits: Python conversations in every accepted form,
manifests without label / split columns, caches without a dev split, sweep folders as runs."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from erc.apply.conversations import read_conversations
from erc.errors import UserError
from erc.extract.datasets.manifest import load_manifest
from erc.train.dialogues import DialogueData
from erc.train.trained import run_members
from tests.synth_cache import write_synthetic_cache

LABELS = ["joy", "anger"]
TALK = [{"speaker": "A", "text": "hello"}, {"speaker": "B", "text": "go away", "audio": "clips/b.wav"}]


def _rows(corpus):
    return [(u.utterance_id, u.dialogue_id, u.turn, u.speaker, u.text, u.label, u.split, u.audio) for u in corpus.utterances]


def test_one_conversation_gets_ids_turns_and_media_paths_against_base(tmp_path: Path) -> None:
    c = read_conversations(TALK, LABELS, base=tmp_path)
    assert c.labels == LABELS
    assert _rows(c) == [("d0_0", "d0", 0, "A", "hello", "", "test", None),
                        ("d0_1", "d0", 1, "B", "go away", "", "test", str(tmp_path / "clips/b.wav"))]


def test_list_of_lists_dict_and_dataframe_give_the_same_corpus(tmp_path: Path) -> None:
    second = [{"speaker": "C", "text": "wow", "label": "joy"}]
    as_lists = read_conversations([TALK, second], LABELS, base=tmp_path)
    as_dict = read_conversations({"d0": TALK, "d1": second}, LABELS, base=tmp_path)
    frame = pd.DataFrame([{**u, "dialogue_id": d} for d, conv in (("d0", TALK), ("d1", second)) for u in conv])
    as_frame = read_conversations(frame, LABELS, base=tmp_path)
    assert _rows(as_lists) == _rows(as_dict) == _rows(as_frame)
    assert [u.label for u in as_frame.utterances] == ["", "", "joy"]


def test_given_turns_order_a_conversation() -> None:
    c = read_conversations([{"text": "b", "turn": 1, "utterance_id": "x"}, {"text": "a", "turn": 0, "utterance_id": "y"}], LABELS)
    assert [(u.utterance_id, u.turn) for u in c.utterances] == [("y", 0), ("x", 1)]


@pytest.mark.parametrize("bad,needle", [
    ([{"speaker": "A"}], "has no 'text'"),
    ([{"text": "a", "utterance_id": "u"}, {"text": "b", "utterance_id": "u"}], "appears twice"),
    ([{"text": "a", "turn": "first"}], "turn must be a number"),
    ("just a string", "must be a list"),
    ([], "no utterances"),
])
def test_malformed_conversations_are_user_errors(bad, needle: str) -> None:
    with pytest.raises(UserError, match=needle):
        read_conversations(bad, LABELS)


def test_manifest_without_label_and_split_columns_is_unlabelled_test_data(tmp_path: Path) -> None:
    p = tmp_path / "new.csv"
    p.write_text("dialogue_id,utterance_id,speaker,text\nd,u0,A,hi\nd,u1,B,bye\n")
    c = load_manifest(p, {})
    assert c.labels == []
    assert [(u.label, u.split) for u in c.utterances] == [("", "test"), ("", "test")]


def test_manifest_empty_labels_are_unlabelled_rows(tmp_path: Path) -> None:
    p = tmp_path / "m.csv"
    p.write_text("dialogue_id,utterance_id,text,label,split\nd,u0,hi,joy,train\nd,u1,yo,,train\n")
    c = load_manifest(p, {})
    assert c.labels == ["joy"]
    assert [u.label for u in c.utterances] == ["joy", ""]


def test_manifest_without_text_is_a_user_error(tmp_path: Path) -> None:
    p = tmp_path / "m.csv"
    p.write_text("dialogue_id,utterance_id,label\nd,u0,joy\n")
    with pytest.raises(UserError, match="lacks required column.*text"):
        load_manifest(p, {})


def test_dialogue_data_for_prediction_neither_needs_nor_carves_a_dev_split(tmp_path: Path) -> None:
    cache = write_synthetic_cache(tmp_path / "c.h5", n_dialogues=3, splits=(0.0, 0.0, 1.0))
    with pytest.raises(UserError, match="no dev split"):
        DialogueData(cache, ["text"])
    data = DialogueData(cache, ["text"], dev_fraction=None)
    assert set(data.split_of) == {"test"}


def _finished(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "best.pt").write_bytes(b"")
    return path


def test_sweep_folders_name_their_finished_seed_and_fold_runs_in_order(tmp_path: Path) -> None:
    for k in (0, 1, 2, 10):
        _finished(tmp_path / "s" / f"seed{k}")
    (tmp_path / "s" / "seed3").mkdir()
    assert [p.name for p in run_members(tmp_path / "s")] == ["seed0", "seed1", "seed2", "seed10"]
    one = _finished(tmp_path / "one")
    assert run_members(one) == [one]
    for s in (0, 1):
        for k in (0, 1):
            _finished(tmp_path / "cv" / f"seed{s}" / f"fold{k}")
    assert [str(p.relative_to(tmp_path / "cv")) for p in run_members(tmp_path / "cv")] == [
        "seed0/fold0", "seed0/fold1", "seed1/fold0", "seed1/fold1"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="not a finished run"):
        run_members(tmp_path / "empty")
