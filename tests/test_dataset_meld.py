"""The MELD adapter: the real annotation files, and a miniature tree with real clips."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import av
import pytest

from erc.errors import UserError
from erc.extract.datasets.meld import MELD_LABELS, fix_text, load_meld
from tests.fixtures_media import build_mini_meld

_REPO = Path(__file__).resolve().parents[1]
REAL = next((p for p in (_REPO / "shared" / "data" / "meld", _REPO.parent / "shared" / "data" / "meld")
             if p.is_dir()), _REPO / "shared" / "data" / "meld")
needs_real = pytest.mark.skipif(not (REAL / "train_sent_emo.csv").is_file(), reason="real MELD CSVs absent")


@needs_real
def test_meld_real_files_load_all_13708_utterances() -> None:
    c = load_meld(REAL, {})
    assert len(c.utterances) == 13708
    assert Counter(u.split for u in c.utterances) == {"train": 9989, "dev": 1109, "test": 2610}
    assert Counter(d.split("_")[0] for d in c.dialogues()) == {"train": 1038, "dev": 114, "test": 280}
    assert c.labels == MELD_LABELS
    assert len({u.utterance_id for u in c.utterances}) == 13708
    assert all(u.audio is None and u.video is None for u in c.utterances)  # no clip folders here
    first = c.utterances[0]
    assert (first.utterance_id, first.dialogue_id, first.turn, first.speaker) == (
        "train_dia0_utt0", "train_dia0", 0, "Chandler")


@pytest.fixture(scope="module")
def mini(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_mini_meld(tmp_path_factory.mktemp("meld"))


def test_meld_orders_turns_by_utterance_id_within_a_dialogue(mini: Path) -> None:
    c = load_meld(mini, {})
    assert len(c.utterances) == 9
    d1 = c.dialogues()["train_dia1"]
    assert [(u.utterance_id, u.turn, u.speaker) for u in d1] == [
        ("train_dia1_utt0", 0, "Rachel"), ("train_dia1_utt1", 1, "Ross")]
    assert [u.split for u in c.utterances] == ["train"] * 5 + ["dev"] * 2 + ["test"] * 2


def test_meld_audio_and_video_point_at_the_clip_even_when_missing_or_corrupt(mini: Path) -> None:
    c = load_meld(mini, {})
    by_id = {u.utterance_id: u for u in c.utterances}
    ok = by_id["train_dia0_utt0"]
    assert ok.audio == ok.video and ok.video.endswith("train_splits/dia0_utt0.mp4")
    with av.open(ok.video) as container:
        assert container.streams.video and container.streams.audio
    assert by_id["dev_dia0_utt1"].video.endswith("dev_splits_complete/dia0_utt1.mp4")
    assert by_id["test_dia3_utt0"].video.endswith("output_repeated_splits_test/dia3_utt0.mp4")
    missing = by_id["train_dia1_utt1"]
    assert missing.video is not None and not Path(missing.video).exists()
    assert Path(by_id["test_dia3_utt1"].video).exists()  # corrupt: the encoders report it


def test_meld_without_clip_folders_has_no_media(mini: Path, tmp_path: Path) -> None:
    for name in ("train", "dev", "test"):
        shutil.copy(mini / f"{name}_sent_emo.csv", tmp_path)
    c = load_meld(tmp_path, {})
    assert all(u.audio is None and u.video is None for u in c.utterances)


def test_meld_finds_clip_folders_under_meld_raw(mini: Path, tmp_path: Path) -> None:
    root = tmp_path / "meld"
    shutil.copytree(mini, root / "MELD.Raw")
    for name in ("train", "dev", "test"):
        shutil.move(str(root / "MELD.Raw" / f"{name}_sent_emo.csv"), root)
    c = load_meld(root, {})
    assert all(u.video and "MELD.Raw" in u.video for u in c.utterances)


def test_meld_normalises_only_the_common_mojibake(mini: Path) -> None:
    c = load_meld(mini, {})
    text = {u.utterance_id: u.text for u in c.utterances}
    assert text["train_dia0_utt1"] == "You must've had your hands full..."
    assert text["train_dia0_utt2"] == 'That I did, "that" I did.'
    assert fix_text("it\u2019s caf\u00e9") == "it\u2019s caf\u00e9"
    assert fix_text("\u0093hi\u0094 \u0096 \u0097") == '"hi" - -'
    raw = load_meld(mini, {"fix_mojibake": "false"})
    assert "\u0092" in {u.utterance_id: u.text for u in raw.utterances}["train_dia0_utt1"]


def test_meld_duplicate_dialogue_and_utterance_ids_keep_the_first(mini: Path, tmp_path: Path) -> None:
    shutil.copytree(mini, tmp_path / "m", ignore=shutil.ignore_patterns("*_splits*"))
    csv_path = tmp_path / "m" / "dev_sent_emo.csv"
    lines = csv_path.read_text().splitlines()
    csv_path.write_text("\n".join(lines + [lines[1].replace("Oh no.", "Duplicate.")]) + "\n")
    c = load_meld(tmp_path / "m", {})
    dev = [u for u in c.utterances if u.split == "dev"]
    assert [u.text for u in dev] == ["Oh no.", "Ew."]


def test_meld_missing_root_is_a_one_line_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError) as err:
        load_meld(tmp_path / "absent", {})
    assert "\n" not in str(err.value)


def test_meld_missing_csv_is_a_user_error_naming_it(mini: Path, tmp_path: Path) -> None:
    shutil.copy(mini / "train_sent_emo.csv", tmp_path)
    with pytest.raises(UserError, match="dev_sent_emo.csv"):
        load_meld(tmp_path, {})


def test_meld_unknown_emotion_is_a_user_error(mini: Path, tmp_path: Path) -> None:
    for name in ("train", "dev", "test"):
        shutil.copy(mini / f"{name}_sent_emo.csv", tmp_path)
    p = tmp_path / "test_sent_emo.csv"
    p.write_text(p.read_text().replace(",joy,", ",happy,"))
    with pytest.raises(UserError, match="unknown emotion 'happy'"):
        load_meld(tmp_path, {})


def _rearrange(mini: Path, root: Path, csv_sub: str, clip_sub: str) -> Path:
    """Copy the mini release into ``root`` with each split's CSV under ``csv_sub`` and its clip
    folder under ``clip_sub`` (``{split}`` is replaced by the split's name)."""
    from erc.extract.datasets.meld import CLIP_DIRS, CSV_NAMES

    for split in CSV_NAMES:
        for sub, name in ((csv_sub, CSV_NAMES[split]), (clip_sub, CLIP_DIRS[split])):
            dest = root / sub.format(split=split)
            dest.mkdir(parents=True, exist_ok=True)
            (shutil.copytree if (mini / name).is_dir() else shutil.copy)(mini / name, dest / name)
    return root


@pytest.mark.parametrize("csv_sub,clip_sub,root_sub", [
    ("MELD.Raw", "MELD.Raw/{split}", ""),  # MELD.Raw/train/train_splits: train.tar.gz unpacked in place
    ("MELD.Raw", "MELD.Raw/{split}", "MELD.Raw"),  # --root is MELD.Raw itself
    ("{split}", "{split}", ""),  # CSVs and clips in per-split folders
    ("data/MELD", "data/MELD", ""),
])
def test_meld_finds_csvs_and_clips_in_the_common_layouts(mini: Path, tmp_path: Path, csv_sub: str, clip_sub: str,
                                                         root_sub: str) -> None:
    root = _rearrange(mini, tmp_path / "r", csv_sub, clip_sub)
    c = load_meld(root / root_sub, {})
    assert len(c.utterances) == 9 and c.media_searched == {}
    assert sum(Path(u.video).is_file() for u in c.utterances) == 8  # all but the one missing clip


def test_meld_missing_csv_error_names_every_path_tried(mini: Path, tmp_path: Path) -> None:
    root = _rearrange(mini, tmp_path / "r", "{split}", "{split}")
    (root / "dev" / "dev_sent_emo.csv").unlink()
    with pytest.raises(UserError) as err:
        load_meld(root, {})
    msg = str(err.value)
    assert "dev_sent_emo.csv" in msg and str(root / "dev" / "dev_sent_emo.csv") in msg
    assert str(root / "MELD.Raw" / "dev_sent_emo.csv") in msg and "\n" not in msg


def test_meld_records_the_folders_searched_for_missing_clips(mini: Path, tmp_path: Path) -> None:
    for name in ("train", "dev", "test"):
        shutil.copy(mini / f"{name}_sent_emo.csv", tmp_path)
    (tmp_path / "test.tar.gz").write_bytes(b"\x1f\x8b")
    c = load_meld(tmp_path, {})
    assert set(c.media_searched) == {"train", "dev", "test"}
    assert str(tmp_path / "MELD.Raw" / "train" / "train_splits") in c.media_searched["train"]
    assert c.media_searched["test"][0] == f"{tmp_path / 'test.tar.gz'} (an archive: unpack it)"


def test_meld_warns_about_scene_long_and_empty_csv_spans_and_clips_that_disagree(mini: Path, tmp_path: Path) -> None:
    from erc.extract.preflight import preflight

    shutil.copytree(mini, tmp_path / "m")
    test_csv = tmp_path / "m" / "test_sent_emo.csv"
    lines = test_csv.read_text().splitlines()
    lines[1] = lines[1].replace('"00:00:02,000"', '"00:05:00,000"').replace(",00:00:02,000", ",00:05:00,000")
    lines[2] = lines[2].replace("00:00:02,000", "00:00:01,000")
    test_csv.write_text("\n".join(lines) + "\n")
    c = load_meld(tmp_path / "m", {})
    assert c.expected_seconds["test_dia3_utt0"] == pytest.approx(299.0)
    assert c.expected_seconds["train_dia0_utt0"] == pytest.approx(1.0)
    warnings = preflight(c, ["audio", "video"])
    assert any("span more than 60 s" in w and "test_dia3_utt0 (299 s)" in w for w in warnings), warnings
    assert any("empty StartTime-EndTime span" in w and "test_dia3_utt1" in w for w in warnings), warnings
    clip = [w for w in warnings if "differ in length" in w]
    assert len(clip) == 1 and clip[0].startswith("1 clip(s)") and "test_dia3_utt0 (clip 0." in clip[0]
    assert "CSV 299.0 s)" in clip[0]
