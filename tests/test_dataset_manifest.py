"""The manifest adapter: CSV / JSONL files with the Utterance columns."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from erc.errors import UserError
from erc.extract.datasets.manifest import load_manifest

_REPO = Path(__file__).resolve().parents[1]
IEMOCAP_CSV = next((p for p in (_REPO / "shared" / "data" / "iemocap" / "iemocap_text.csv",
                                _REPO.parent / "shared" / "data" / "iemocap" / "iemocap_text.csv")
                    if p.is_file()), _REPO / "shared" / "data" / "iemocap" / "iemocap_text.csv")
HEADER = "dialogue_id,utterance_id,turn,speaker,text,label,split"


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.skipif(not IEMOCAP_CSV.is_file(), reason="real IEMOCAP text CSV absent")
def test_manifest_loads_the_real_iemocap_text_csv_in_iemocap_label_order() -> None:
    c = load_manifest(IEMOCAP_CSV, {})
    assert len(c.utterances) == 7433
    assert len(c.dialogues()) == 151
    assert c.labels == ["happiness", "sadness", "neutral", "anger", "excited", "frustration"]
    assert Counter(u.split for u in c.utterances) == {"train": 5163, "dev": 647, "test": 1623}
    for utts in c.dialogues().values():
        assert [u.turn for u in utts] == list(range(len(utts)))


def test_manifest_csv_defaults_turn_speaker_and_sorted_labels(tmp_path: Path) -> None:
    p = write(tmp_path / "m.csv", ["dialogue_id,utterance_id,text,label,split",
                                   "d1,u1,hello,b,train", "d2,u3,x,a,val", "d1,u2,bye,c,train"])
    c = load_manifest(p, {})
    assert c.labels == ["a", "b", "c"]
    assert [(u.utterance_id, u.turn, u.speaker) for u in c.utterances] == [
        ("u1", 0, ""), ("u2", 1, ""), ("u3", 0, "")]
    assert c.utterances[2].split == "dev"


def test_manifest_sorts_by_turn_within_dialogue(tmp_path: Path) -> None:
    p = write(tmp_path / "m.csv", [HEADER, "d,b,1,A,two,x,test", "d,a,0,B,one,y,test"])
    c = load_manifest(p, {})
    assert [u.utterance_id for u in c.utterances] == ["a", "b"]


def test_manifest_labels_option_sets_the_class_order(tmp_path: Path) -> None:
    p = write(tmp_path / "m.csv", [HEADER, "d,a,0,A,t,x,train", "d,b,1,A,t,y,train"])
    assert load_manifest(p, {"labels": "y,x,z"}).labels == ["y", "x", "z"]
    with pytest.raises(UserError, match="not in the labels option: x"):
        load_manifest(p, {"labels": "y"})


def test_manifest_uses_meld_order_for_the_meld_label_set(tmp_path: Path) -> None:
    meld = ["neutral", "surprise", "fear", "sadness", "joy", "disgust", "anger"]
    lines = [HEADER] + [f"d,u{i},{i},A,t,{lab},train" for i, lab in enumerate(sorted(meld))]
    assert load_manifest(write(tmp_path / "m.csv", lines), {}).labels == meld


def test_manifest_jsonl_resolves_relative_media_against_its_folder(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    rows = [{"dialogue_id": "d", "utterance_id": "u0", "text": "hi", "label": "a", "split": "train",
             "audio": "clips/u0.wav", "video": str(tmp_path / "abs.mp4"), "start": 1.5, "end": "2.5",
             "video_region": "left"},
            {"dialogue_id": "d", "utterance_id": "u1", "text": "yo", "label": "b", "split": "test",
             "audio": None}]
    p = tmp_path / "sub" / "m.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    u0, u1 = load_manifest(p, {}).utterances
    assert u0.audio == str(tmp_path / "sub" / "clips" / "u0.wav")
    assert u0.video == str(tmp_path / "abs.mp4")
    assert (u0.start, u0.end, u0.video_region) == (1.5, 2.5, "left")
    assert (u1.audio, u1.video, u1.start, u1.turn) == (None, None, None, 1)


def test_manifest_missing_file_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        load_manifest(tmp_path / "nope.csv", {})


def test_manifest_unknown_extension_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="unknown extension '.xlsx'"):
        load_manifest(write(tmp_path / "m.xlsx", [HEADER]), {})


def test_manifest_missing_required_columns_are_named(tmp_path: Path) -> None:
    p = write(tmp_path / "m.csv", ["dialogue_id,label,split", "d,x,train"])
    with pytest.raises(UserError, match="utterance_id, text"):
        load_manifest(p, {})


def test_manifest_with_duplicate_ids_is_a_user_error(tmp_path: Path) -> None:
    p = write(tmp_path / "m.csv", [HEADER, "d,u1,0,A,t,x,train", "d,u1,1,A,t,x,train"])
    with pytest.raises(UserError, match="duplicate utterance_id.*u1"):
        load_manifest(p, {})


def test_manifest_bad_split_values_are_a_user_error(tmp_path: Path) -> None:
    p = write(tmp_path / "m.csv", [HEADER, "d,u1,0,A,t,x,holdout"])
    with pytest.raises(UserError, match="bad split value.*holdout"):
        load_manifest(p, {})


@pytest.mark.parametrize("content", ["", HEADER + "\n"])
def test_manifest_empty_file_is_a_user_error(tmp_path: Path, content: str) -> None:
    p = tmp_path / "m.csv"
    p.write_text(content)
    with pytest.raises(UserError, match="empty"):
        load_manifest(p, {})


def test_manifest_bad_json_line_and_bad_numbers_are_user_errors(tmp_path: Path) -> None:
    p = tmp_path / "m.jsonl"
    p.write_text('{"dialogue_id": "d"\n')
    with pytest.raises(UserError, match="line 1 is not valid JSON"):
        load_manifest(p, {})
    q = write(tmp_path / "m.csv", [HEADER, "d,u1,first,A,t,x,train"])
    with pytest.raises(UserError, match="turn must be a number"):
        load_manifest(q, {})


def test_manifest_errors_are_one_line(tmp_path: Path) -> None:
    p = write(tmp_path / "m.csv", ["a,b", "1,2"])
    with pytest.raises(UserError) as err:
        load_manifest(p, {})
    assert "\n" not in str(err.value)
