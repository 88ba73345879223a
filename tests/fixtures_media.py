"""Miniature IEMOCAP and MELD trees with real media files, for tests (each builds in < 1 s).

``build_mini_iemocap(tmp_path)`` and ``build_mini_meld(tmp_path)`` return the dataset root.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from erc.extract.datasets.synth import draw_face, tone, write_avi, write_mp4, write_wav

SR = 16000

# dialog -> (session, [(start, end, utterance id, code, text)]) ; rows deliberately out of order
MINI_IEMOCAP: dict[str, tuple[int, list[tuple[float, float, str, str, str]]]] = {
    "Ses01F_impro01": (1, [
        (0.2, 1.0, "Ses01F_impro01_F000", "neu", "Excuse me."),
        (2.6, 3.4, "Ses01F_impro01_F001", "xxx", "Hmm."),
        (1.1, 2.5, "Ses01F_impro01_M000", "fru", "Do you have your forms?"),
        (3.5, 4.5, "Ses01F_impro01_M001", "ang", "Let me see them."),
    ]),
    "Ses01M_script01_1": (1, [
        (0.3, 1.2, "Ses01M_script01_1_M000", "hap", "What a day!"),
        (1.3, 2.4, "Ses01M_script01_1_F000", "exc", "It is amazing."),
        (2.5, 3.3, "Ses01M_script01_1_M001", "sur", "Really?"),
    ]),
    "Ses02F_impro02": (2, [
        (0.1, 0.9, "Ses02F_impro02_F000", "sad", "I miss him."),
        (1.0, 1.8, "Ses02F_impro02_M000", "neu", "I know."),
    ]),
    "Ses05M_impro01": (5, [
        (0.5, 1.5, "Ses05M_impro01_M000", "neu", "Hi."),
        (1.6, 2.6, "Ses05M_impro01_F000", "exc", "Hello there!"),
        (2.7, 3.6, "Ses05M_impro01_M001", "sad", "It is over."),
    ]),
    "Ses05F_impro02": (5, [
        (0.4, 1.4, "Ses05F_impro02_F000", "ang", "No!"),
        (1.5, 2.2, "Ses05F_impro02_M000", "fru", "Fine."),
    ]),
}


def _eval_text(dialog: str, rows: list[tuple[float, float, str, str, str]]) -> str:
    lines = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""]
    for start, end, uid, code, _ in rows:
        lines += [f"[{start:.4f} - {end:.4f}]\t{uid}\t{code}\t[2.5000, 2.5000, 2.5000]",
                  "C-E1:\tNeutral state;\t()", "A-E1:\tval 3; act 2; dom  2;\t()", ""]
    return "\n".join(lines) + "\n"


def _transcript_text(rows: list[tuple[float, float, str, str, str]]) -> str:
    lines = [f"{uid} [{start:08.4f}-{end:08.4f}]: {text}" for start, end, uid, _, text in rows]
    lines.insert(1, "M_sil [000.0000-000.2000]: [BREATHING]")
    return "\n".join(lines) + "\n"


def build_mini_iemocap(tmp_path: Path) -> Path:
    """Write ``tmp_path/IEMOCAP_full_release`` (Sessions 1, 2, 5) and return that folder.

    Kept in 6 classes: 12 utterances (one ``xxx`` and one ``sur`` dropped); 4 classes: 10.
    """
    root = Path(tmp_path) / "IEMOCAP_full_release"
    rng = np.random.default_rng(0)
    for dialog, (session, rows) in MINI_IEMOCAP.items():
        sdir = root / f"Session{session}"
        for sub in ("dialog/EmoEvaluation", "dialog/transcriptions", "dialog/avi/DivX"):
            (sdir / sub).mkdir(parents=True, exist_ok=True)
        (sdir / "dialog/EmoEvaluation" / f"{dialog}.txt").write_text(_eval_text(dialog, rows))
        (sdir / "dialog/transcriptions" / f"{dialog}.txt").write_text(_transcript_text(rows))
        for start, end, uid, _, _ in rows:
            write_wav(sdir / "sentences/wav" / dialog / f"{uid}.wav", tone(220.0, end - start, SR, rng=rng), SR)
        seconds = max(r[1] for r in rows) + 0.5
        n = int(seconds * 4)
        left, right = draw_face("neutral", 32, rng), draw_face("joy", 32, rng)
        frames = np.repeat(np.concatenate([left, right], axis=1)[None], n, axis=0)
        write_avi(sdir / "dialog/avi/DivX" / f"{dialog}.avi", frames, 4, tone(300.0, seconds, SR), SR)
    return root


# split -> {dialogue id: [(utterance id, speaker, emotion, text)]}
MINI_MELD: dict[str, dict[int, list[tuple[int, str, str, str]]]] = {
    "train": {
        0: [(0, "Chandler", "neutral", "also I was the point person."),
            (1, "The Interviewer", "surprise", "You must\u0092ve had your hands full\u0085"),
            (2, "Chandler", "joy", "That I did, \"that\" I did.")],
        1: [(1, "Ross", "sadness", "Second line first in the file."),
            (0, "Rachel", "anger", "First line.")],
    },
    "dev": {0: [(0, "Monica", "fear", "Oh no."), (1, "Joey", "disgust", "Ew.")]},
    "test": {3: [(0, "Phoebe", "joy", "Yay!"), (1, "Phoebe", "neutral", "Okay.")]},
}
CLIP_DIRS = {"train": "train_splits", "dev": "dev_splits_complete", "test": "output_repeated_splits_test"}
MISSING_CLIP = ("train", "dia1_utt1.mp4")
CORRUPT_CLIP = ("test", "dia3_utt1.mp4")


def write_meld_csv(path: Path, dialogues: dict[int, list[tuple[int, str, str, str]]]) -> None:
    """One MELD-format CSV (official columns) with the given dialogues."""
    with path.open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["Sr No.", "Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID",
                    "Utterance_ID", "Season", "Episode", "StartTime", "EndTime"])
        k = 0
        for d, rows in dialogues.items():
            for u, speaker, emotion, text in rows:
                k += 1
                w.writerow([k, text, speaker, emotion, "neutral", d, u, 1, 1, "00:00:01,000", "00:00:02,000"])


def build_mini_meld(tmp_path: Path) -> Path:
    """Write a MELD folder (3 CSVs, 9 utterances) with real mp4 clips and return it.

    ``train/dia1_utt1.mp4`` is missing and ``test/dia3_utt1.mp4`` holds random bytes.
    """
    root = Path(tmp_path) / "MELD"
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for split, dialogues in MINI_MELD.items():
        write_meld_csv(root / f"{split}_sent_emo.csv", dialogues)
        clip_dir = root / CLIP_DIRS[split]
        clip_dir.mkdir(exist_ok=True)
        for d, rows in dialogues.items():
            for u, _, emotion, _ in rows:
                name = f"dia{d}_utt{u}.mp4"
                if (split, name) == MISSING_CLIP:
                    continue
                if (split, name) == CORRUPT_CLIP:
                    (clip_dir / name).write_bytes(rng.bytes(2048))
                    continue
                face = emotion if emotion != "fear" else "surprise"
                frames = np.stack([draw_face(face, 32, rng) for _ in range(4)])
                write_mp4(clip_dir / name, frames, 8, tone(330.0, 0.5, SR, rng=rng), SR)
    return root
