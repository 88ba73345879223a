"""The IEMOCAP adapter on a miniature release tree with real wav / avi files."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import av
import pytest
import soundfile as sf

from erc.errors import UserError
from erc.extract.datasets import load_dataset
from erc.extract.datasets.iemocap import load_iemocap, region_of, speaker_of
from tests.fixtures_media import build_mini_iemocap


@pytest.fixture(scope="module")
def mini(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_mini_iemocap(tmp_path_factory.mktemp("iemocap"))


def test_iemocap_six_classes_keep_only_hap_sad_neu_ang_exc_fru(mini: Path) -> None:
    c = load_iemocap(mini, {})
    assert c.labels == ["happiness", "sadness", "neutral", "anger", "excited", "frustration"]
    assert len(c.utterances) == 12
    ids = {u.utterance_id for u in c.utterances}
    assert "Ses01F_impro01_F001" not in ids  # xxx
    assert "Ses01M_script01_1_M001" not in ids  # sur
    assert {u.label for u in c.utterances} <= set(c.labels)


def test_iemocap_four_classes_merge_excited_into_happiness_and_drop_frustration(mini: Path) -> None:
    c = load_iemocap(mini, {"classes": "4"})
    assert c.labels == ["happiness", "sadness", "neutral", "anger"]
    assert len(c.utterances) == 10
    by_id = {u.utterance_id: u for u in c.utterances}
    assert by_id["Ses01M_script01_1_F000"].label == "happiness"
    assert not any(u.label == "frustration" for u in c.utterances)


def test_iemocap_orders_dialogues_by_name_and_utterances_by_start_time(mini: Path) -> None:
    c = load_iemocap(mini, {})
    dialogues = list(c.dialogues())
    assert dialogues == sorted(dialogues)
    for utts in c.dialogues().values():
        assert [u.turn for u in utts] == list(range(len(utts)))
        assert [u.video_start for u in utts] == sorted(u.video_start for u in utts)
    first = c.dialogues()["Ses01F_impro01"]
    assert [u.utterance_id for u in first] == ["Ses01F_impro01_F000", "Ses01F_impro01_M000",
                                               "Ses01F_impro01_M001"]


def test_iemocap_reads_text_speaker_media_and_segment(mini: Path) -> None:
    c = load_iemocap(mini, {})
    u = next(u for u in c.utterances if u.utterance_id == "Ses01F_impro01_M000")
    assert u.text == "Do you have your forms?"
    assert u.speaker == "M"
    assert (u.video_start, u.video_end) == (1.1, 2.5)
    assert u.segment("audio") == (None, None)  # one wav per utterance: the whole file
    assert u.audio.endswith("Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_M000.wav")
    assert u.video.endswith("Session1/dialog/avi/DivX/Ses01F_impro01.avi")
    assert sf.info(u.audio).samplerate == 16000
    with av.open(u.video) as container:
        assert container.streams.video and container.streams.audio


def test_iemocap_marker_actor_is_the_session_letter_on_the_configured_side(mini: Path) -> None:
    assert speaker_of("Ses01F_impro01_M003") == "M"
    assert speaker_of("Ses01M_script01_1_F000") == "F"
    assert region_of("Ses01F_impro01_F000", "left") == "left"
    assert region_of("Ses01F_impro01_M000", "left") == "right"
    assert region_of("Ses01M_script01_1_M000", "right") == "right"
    c = load_iemocap(mini, {"marker_side": "right"})
    by_id = {u.utterance_id: u for u in c.utterances}
    assert by_id["Ses01F_impro01_F000"].video_region == "right"
    assert by_id["Ses01F_impro01_M000"].video_region == "left"


def test_iemocap_session5_is_test_and_dev_is_carved_from_train_by_dialogue(mini: Path) -> None:
    c = load_iemocap(mini, {})
    split_of = {}
    for u in c.utterances:
        assert split_of.setdefault(u.dialogue_id, u.split) == u.split  # one split per dialogue
    assert {d for d, s in split_of.items() if s == "test"} == {"Ses05F_impro02", "Ses05M_impro01"}
    assert Counter(split_of.values()) == {"train": 2, "dev": 1, "test": 2}
    assert all(not d.startswith("Ses05") for d, s in split_of.items() if s == "dev")


def test_iemocap_dev_split_is_deterministic_and_follows_the_seed(mini: Path) -> None:
    def dev(opts: dict[str, str]) -> set[str]:
        return {u.dialogue_id for u in load_iemocap(mini, opts).utterances if u.split == "dev"}

    assert dev({}) == dev({})
    assert len({frozenset(dev({"seed": str(s)})) for s in range(8)}) > 1
    assert dev({"dev_fraction": "0"}) == set()


def test_iemocap_accepts_the_parent_of_the_release_folder(mini: Path) -> None:
    assert len(load_dataset("iemocap", mini.parent).utterances) == 12


def test_iemocap_missing_root_is_a_one_line_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError) as err:
        load_iemocap(tmp_path / "nope", {})
    assert "\n" not in str(err.value) and "does not exist" in str(err.value)


def test_iemocap_root_without_emoevaluation_is_a_user_error(tmp_path: Path) -> None:
    (tmp_path / "Session1" / "dialog").mkdir(parents=True)
    with pytest.raises(UserError, match="not an IEMOCAP_full_release folder"):
        load_iemocap(tmp_path, {})


@pytest.mark.parametrize("opts", [{"classes": "5"}, {"marker_side": "up"}, {"dev_fraction": "1.5"},
                                  {"colour": "red"}, {"classes": "six"}])
def test_iemocap_bad_options_are_user_errors(mini: Path, opts: dict[str, str]) -> None:
    with pytest.raises(UserError):
        load_iemocap(mini, opts)
