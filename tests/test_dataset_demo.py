"""The built-in demo corpus: generated once, complete or absent, learnable from each modality."""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path

import av
import numpy as np
import pytest

from erc.errors import UserError
from erc.extract.datasets import demo
from erc.extract.datasets.demo import FILLERS, VOICE, load_demo
from erc.extract.datasets.meld import MELD_LABELS

SMALL = {"dialogues": "8", "seed": "3"}


@pytest.fixture(scope="module")
def corpus_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("demo") / "demo"
    load_demo(root, SMALL)
    return root


def test_demo_generates_a_meld_layout_corpus_with_real_clips(corpus_root: Path) -> None:
    c = load_demo(corpus_root, SMALL)
    assert c.name == "demo" and c.labels == MELD_LABELS
    assert {u.label for u in c.utterances} <= {"neutral", "joy", "sadness", "anger", "surprise"}
    assert len(c.dialogues()) == 8
    assert set(Counter(u.split for u in c.utterances)) == {"train", "dev", "test"}
    for name in ("train_sent_emo.csv", "dev_sent_emo.csv", "test_sent_emo.csv", ".complete"):
        assert (corpus_root / name).is_file()
    u = c.utterances[0]
    assert u.audio == u.video and Path(u.video).is_file()
    with av.open(u.video) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    with av.open(u.audio) as container:
        samples = sum(f.samples for f in container.decode(audio=0))
    assert len(frames) >= 8 and frames[0].shape == (64, 64, 3)
    assert samples >= 16000


def test_demo_is_generated_once_and_reused(corpus_root: Path) -> None:
    assert demo.ensure_demo(corpus_root, demo.DemoOptions(dialogues=8, seed=3)) is False


def test_demo_generation_is_deterministic_for_a_seed(corpus_root: Path, tmp_path: Path) -> None:
    other = load_demo(tmp_path / "again", SMALL)
    assert other.manifest_hash() == load_demo(corpus_root, SMALL).manifest_hash()


def test_demo_with_other_options_regenerates_in_place(tmp_path: Path) -> None:
    root = tmp_path / "d"
    a = load_demo(root, {"dialogues": "3", "seed": "0"})
    b = load_demo(root, {"dialogues": "4", "seed": "0"})
    assert len(a.dialogues()) == 3 and len(b.dialogues()) == 4
    assert [p.name for p in tmp_path.iterdir()] == ["d"]  # no temporary folders left behind


def test_demo_killed_generation_leaves_no_complete_looking_corpus(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(out: Path, opts: demo.DemoOptions) -> None:
        (out / "train_sent_emo.csv").write_text("half")
        raise KeyboardInterrupt

    monkeypatch.setattr(demo, "generate", boom)
    with pytest.raises(KeyboardInterrupt):
        load_demo(tmp_path / "d", SMALL)
    assert list(tmp_path.iterdir()) == []


def test_demo_refuses_to_overwrite_a_foreign_folder(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not empty"):
        load_demo(tmp_path, SMALL)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_demo_bad_options_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError):
        load_demo(tmp_path / "d", {"dialogues": "many"})
    with pytest.raises(UserError):
        load_demo(tmp_path / "d", {"size": "3"})


def test_demo_script_has_a_context_only_share_and_label_cues() -> None:
    rng = np.random.default_rng(0)
    lines = [line for _ in range(200) for line in demo.script_dialogue(rng)]
    fillers = [line for line in lines if line.text in FILLERS]
    assert 0.2 < len(fillers) / len(lines) < 0.35
    assert all(f.voice == "neutral" and f.face == "neutral" for f in fillers)
    assert Counter(f.label for f in fillers).most_common(1)[0][1] < len(fillers)  # varies with mood
    cued = [line for line in lines if line.text not in FILLERS]
    for attr in ("voice", "face"):
        agree = np.mean([getattr(line, attr) == line.label for line in cued])
        assert 0.8 < agree < 0.95
    assert all(line.label in VOICE for line in lines)


def test_demo_audio_pitch_follows_the_label(corpus_root: Path) -> None:
    c = load_demo(corpus_root, SMALL)
    pitches: dict[str, list[float]] = {}
    for u in c.utterances:
        if u.text in FILLERS:
            continue
        with av.open(u.audio) as container:
            wav = np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(audio=0)])
        f0 = np.argmax(np.abs(np.fft.rfft(wav))) * 16000 / len(wav)
        pitches.setdefault(u.label, []).append(f0)
    medians = {lab: np.median(v) for lab, v in pitches.items() if len(v) >= 3}
    for lab, f0 in medians.items():
        assert abs(f0 - VOICE[lab][0]) < 0.1 * VOICE[lab][0], (lab, f0)


def test_demo_removes_temporary_folders_of_long_dead_generations(tmp_path: Path) -> None:
    stale, fresh = tmp_path / ".d.tmp-old", tmp_path / ".d.tmp-new"
    stale.mkdir()
    fresh.mkdir()
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    load_demo(tmp_path / "d", {"dialogues": "3"})
    assert not stale.exists() and fresh.exists()
