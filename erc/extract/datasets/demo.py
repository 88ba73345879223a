"""The built-in demo corpus: a small synthetic dataset written as real files in the MELD layout.

Each label can be learned from every modality alone (emotion words in the text; the pitch,
loudness and tempo of a tone in the audio; the mouth and brows of a drawn face in the video),
each with some noise. About 30% of utterances are *ambiguous*: filler text ("okay."), a flat
tone and a neutral face, yet their label is the dialogue's mood, so only the dialogue context
tells them apart. The corpus is generated on first use into a temporary folder and renamed into
place, with a ``.complete`` marker written last.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from erc.config import apply_overrides
from erc.errors import UserError
from erc.corpus import Corpus
from erc.extract.datasets.meld import CLIP_DIRS, CSV_NAMES, load_meld
from erc.extract.datasets.synth import draw_face, tone, write_mp4

VERSION = 1
MARKER = ".complete"
EMOTIONS = ("neutral", "joy", "sadness", "anger", "surprise")
MOODS = ("neutral", "joy", "sadness", "anger", "surprise")
SENTIMENT = {"neutral": "neutral", "joy": "positive", "surprise": "positive",
             "sadness": "negative", "anger": "negative"}
PHRASES = {
    "neutral": ["the train leaves at {n}", "I put the keys on the table", "the meeting moved to {n}",
                "we need {n} more chairs", "the store closes at {n}", "I read the report"],
    "joy": ["I love this", "this is wonderful", "what great news", "I am so happy",
            "that is fantastic", "best day ever"],
    "sadness": ["I miss her so much", "this is so sad", "I feel terrible", "I cannot stop crying",
                "everything is lost", "I am so lonely"],
    "anger": ["this is outrageous", "I am furious with you", "stop lying to me", "get out of here",
              "how dare you", "I hate this"],
    "surprise": ["wait, what", "no way", "are you serious", "I cannot believe it",
                 "oh my god, really", "that is unexpected"],
}
FILLERS = ["okay.", "I see.", "right.", "hmm.", "uh-huh.", "go on.", "and then?", "well.", "sure."]
TAILS = ["", "", " about the car", " about dinner", " at work", " today", " with Sam", " again"]
# label -> (frequency Hz, amplitude, amplitude-modulation tempo Hz)
VOICE = {"neutral": (200.0, 0.20, 0.0), "joy": (330.0, 0.35, 4.0), "sadness": (140.0, 0.12, 1.0),
         "anger": (260.0, 0.55, 7.0), "surprise": (440.0, 0.30, 2.0)}
NAMES = ["Alex", "Sam", "Robin", "Jamie", "Casey", "Morgan", "Taylor", "Jordan"]
SR = 16000
FPS = 8
SIZE = 64
AMBIGUOUS = 0.3
MOOD_SHARE = 0.45
NOISE = 0.12


@dataclass(frozen=True)
class DemoOptions:
    """Options of the demo corpus (``--set dataset.<key>=<value>``)."""

    dialogues: int = 60
    seed: int = 0


@dataclass
class Line:
    """One scripted utterance before it is written to disk."""

    speaker: str
    text: str
    label: str
    voice: str      # which label's tone is heard
    face: str       # which expression is drawn
    seconds: float


def _other(label: str, rng: np.random.Generator) -> str:
    return str(rng.choice([e for e in EMOTIONS if e != label]))


def _cue(label: str, rng: np.random.Generator) -> str:
    """The label shown by one modality: the true one, or (with probability NOISE) another."""
    return _other(label, rng) if rng.random() < NOISE else label


def _text(cue: str, rng: np.random.Generator) -> str:
    phrase = str(rng.choice(PHRASES[cue])).format(n=int(rng.integers(2, 12)))
    end = {"joy": "!", "anger": "!", "surprise": "?"}.get(cue, ".")
    return phrase[0].upper() + phrase[1:] + str(rng.choice(TAILS)) + end


def script_dialogue(rng: np.random.Generator) -> list[Line]:
    """A dialogue with a mood: mood utterances, other emotions and context-only fillers."""
    mood = str(rng.choice(MOODS))
    a, b = rng.choice(NAMES, size=2, replace=False)
    lines = []
    for i in range(int(rng.integers(6, 11))):
        speaker = str(a if i % 2 == 0 or rng.random() < 0.15 else b)
        seconds = float(rng.uniform(1.0, 2.0))
        r = rng.random()
        if r < AMBIGUOUS and i > 0:
            lines.append(Line(speaker, str(rng.choice(FILLERS)), mood, "neutral", "neutral", seconds))
            continue
        if r < AMBIGUOUS + MOOD_SHARE:
            label = mood
        else:
            label = "neutral" if rng.random() < 0.4 else str(rng.choice(EMOTIONS))
        lines.append(Line(speaker, _text(_cue(label, rng), rng), label, _cue(label, rng),
                          _cue(label, rng), seconds))
    return lines


def _audio(voice: str, seconds: float, rng: np.random.Generator) -> np.ndarray:
    freq, amp, tempo = VOICE[voice]
    return tone(freq * float(rng.uniform(0.92, 1.08)), seconds, SR, amp * float(rng.uniform(0.85, 1.15)),
                tempo, noise=0.02, rng=rng)


def _frames(face: str, seconds: float, background: tuple[int, int, int],
            rng: np.random.Generator) -> np.ndarray:
    n = max(2, int(round(seconds * FPS)))
    return np.stack([draw_face(face, SIZE, rng, background) for _ in range(n)])


def _timestamp(seconds: float) -> str:
    ms = int(round(seconds * 1000))
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"


def generate(out: Path, opts: DemoOptions) -> None:
    """Write the whole demo corpus (three CSVs and mp4 clips) into the empty folder ``out``."""
    rng = np.random.default_rng(opts.seed)
    dialogues = [script_dialogue(rng) for _ in range(opts.dialogues)]
    n = len(dialogues)
    n_dev = max(1, round(0.1 * n))
    n_test = max(1, round(0.2 * n))
    order = rng.permutation(n)
    splits = {"test": order[:n_test], "dev": order[n_test:n_test + n_dev], "train": order[n_test + n_dev:]}
    backgrounds = {name: tuple(int(v) for v in rng.integers(20, 90, 3)) for name in NAMES}
    sr_no = 0
    for split, idx in splits.items():
        clip_dir = out / CLIP_DIRS[split]
        clip_dir.mkdir(parents=True)
        rows = []
        for d, k in enumerate(sorted(idx)):
            clock = 1.0 + 60.0 * d
            for u, line in enumerate(dialogues[k]):
                sr_no += 1
                write_mp4(clip_dir / f"dia{d}_utt{u}.mp4", _frames(line.face, line.seconds, backgrounds[line.speaker], rng),
                          FPS, _audio(line.voice, line.seconds, rng), SR)
                rows.append([sr_no, line.text, line.speaker, line.label, SENTIMENT[line.label], d, u,
                             1, 1, _timestamp(clock), _timestamp(clock + line.seconds)])
                clock += line.seconds + 0.3
        with (out / CSV_NAMES[split]).open("w", encoding="utf-8", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["Sr No.", "Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID",
                        "Utterance_ID", "Season", "Episode", "StartTime", "EndTime"])
            w.writerows(rows)


def _stamp(opts: DemoOptions) -> dict[str, object]:
    return {"generator": "erc-demo", "version": VERSION, **asdict(opts)}


def _read_marker(root: Path) -> dict[str, object] | None:
    try:
        return json.loads((root / MARKER).read_text())
    except (OSError, ValueError):
        return None


def ensure_demo(root: Path, opts: DemoOptions) -> bool:
    """Make ``root`` hold the demo corpus for ``opts``; True when it was (re)generated now.

    Never touches a non-empty folder that is not a demo corpus. A killed run leaves only a
    hidden temporary sibling folder, never a ``root`` that looks complete.
    """
    if _read_marker(root) == _stamp(opts):
        return False
    if root.exists() and not root.is_dir():
        raise UserError(f"--root {root} is a file; the demo corpus needs a folder")
    if root.is_dir() and any(root.iterdir()) and _read_marker(root) is None:
        raise UserError(f"--root {root} is not empty and holds no demo corpus; "
                        f"choose an empty or new folder for the demo")
    root.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(root)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    try:
        generate(tmp, opts)
        (tmp / MARKER).write_text(json.dumps(_stamp(opts)))
        _swap_into_place(tmp, root)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return True


def _remove_stale(root: Path, age_s: float = 3600.0) -> None:
    """Delete temporary siblings of ``root`` left by generations killed over ``age_s`` ago."""
    now = time.time()
    for pattern in (f".{root.name}.tmp-*", f".{root.name}.old-*"):
        for p in root.parent.glob(pattern):
            try:
                if p.is_dir() and now - p.stat().st_mtime > age_s:
                    shutil.rmtree(p, ignore_errors=True)
            except OSError:
                pass


def _swap_into_place(tmp: Path, root: Path) -> None:
    """Rename ``tmp`` to ``root``, replacing an empty folder or an older demo corpus."""
    old = None
    if root.exists():
        old = root.parent / f".{root.name}.old-{os.getpid()}"
        root.rename(old)
    try:
        tmp.rename(root)
    except OSError:
        if _read_marker(root) is None:  # another process did not win the race: a real failure
            raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def load_demo(root: Path, options: dict[str, str]) -> Corpus:
    """Generate the demo corpus under ``root`` if needed, then read it back like MELD."""
    opts = apply_overrides(DemoOptions(), options, what="demo option")
    if not 3 <= opts.dialogues <= 100_000:
        raise UserError(f"demo option dialogues must be between 3 and 100000, got {opts.dialogues}")
    root = Path(root)
    ensure_demo(root, opts)
    corpus = load_meld(root, {})
    corpus.name = "demo"
    corpus.options = asdict(opts)
    return corpus
