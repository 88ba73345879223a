"""IEMOCAP adapter: the official ``IEMOCAP_full_release/Session{1..5}/`` tree.

Labels come from ``dialog/EmoEvaluation/<dialog>.txt``, text from
``dialog/transcriptions/<dialog>.txt``, audio from ``sentences/wav/<dialog>/<utt>.wav`` and video
from the side-by-side ``dialog/avi/DivX/<dialog>.avi`` cut to the utterance's ``[start, end]``.
"""

from __future__ import annotations

import random
import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Annotated

from erc.config import Range, apply_overrides
from erc.errors import UserError
from erc.corpus import Corpus, Utterance

LABELS6 = ["happiness", "sadness", "neutral", "anger", "excited", "frustration"]
LABELS4 = ["happiness", "sadness", "neutral", "anger"]
CODES6 = {"hap": "happiness", "sad": "sadness", "neu": "neutral", "ang": "anger",
          "exc": "excited", "fru": "frustration"}
CODES4 = {"hap": "happiness", "exc": "happiness", "sad": "sadness", "neu": "neutral", "ang": "anger"}

EVAL_LINE = re.compile(r"^\[\s*([\d.]+)\s*-\s*([\d.]+)\s*\]\s+(Ses\w+)\s+(\w+)")
TRANSCRIPT_LINE = re.compile(r"^(Ses\w+)\s+\[\s*[\d.]+\s*-\s*[\d.]+\s*\]\s*:\s?(.*)$")
SESSION_DIR = re.compile(r"^Session(\d+)$")


@dataclass(frozen=True)
class IemocapOptions:
    """Options of the IEMOCAP adapter (``--set dataset.<key>=<value>``)."""

    classes: int = 6
    dev_fraction: float = 0.1
    seed: int = 0
    marker_side: str = "left"
    test_session: Annotated[int, Range(1, 5)] = 5  # the session held out as test (1..5)


def speaker_of(utterance_id: str) -> str:
    """``F`` or ``M``: the letter that starts the last ``_`` part (``Ses01F_impro01_M003`` -> ``M``)."""
    return utterance_id.rsplit("_", 1)[-1][:1]


def region_of(utterance_id: str, marker_side: str) -> str:
    """The half of the frame that shows the speaker: the session's letter (``Ses01F`` -> ``F``) is
    the actor with markers, shown on ``marker_side``; the other actor is on the other side."""
    other = "right" if marker_side == "left" else "left"
    return marker_side if speaker_of(utterance_id) == utterance_id[5:6] else other


def find_release(root: Path) -> Path:
    """The ``IEMOCAP_full_release`` folder: ``root`` itself or its child of that name."""
    if not root.exists():
        raise UserError(f"--root {root} does not exist (expected an IEMOCAP_full_release folder)")
    for cand in (root, root / "IEMOCAP_full_release"):
        if any(cand.glob("Session*/dialog/EmoEvaluation/*.txt")):
            return cand
    raise UserError(f"--root {root} is not an IEMOCAP_full_release folder: "
                    f"no Session*/dialog/EmoEvaluation/*.txt found")


def read_evaluation(path: Path) -> list[tuple[float, float, str, str]]:
    """``(start, end, utterance_id, code)`` for each summary line of an EmoEvaluation file."""
    out = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        m = EVAL_LINE.match(line.strip())
        if m:
            out.append((float(m.group(1)), float(m.group(2)), m.group(3), m.group(4).lower()))
    return out


def read_transcript(path: Path) -> dict[str, str]:
    """Utterance id -> text; lines that are not utterances (silence, noise) are skipped."""
    if not path.is_file():
        return {}
    out: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        m = TRANSCRIPT_LINE.match(line.strip())
        if m:
            out[m.group(1)] = m.group(2).strip()
    return out


def _dialogue_files(release: Path) -> list[tuple[int, Path]]:
    """``(session number, EmoEvaluation file)`` sorted by dialogue name."""
    files = []
    for session_dir in release.iterdir():
        m = SESSION_DIR.match(session_dir.name)
        if not m or not session_dir.is_dir():
            continue
        for f in (session_dir / "dialog" / "EmoEvaluation").glob("*.txt"):
            if not f.name.startswith("."):
                files.append((int(m.group(1)), f))
    return sorted(files, key=lambda x: x[1].stem)


def dev_dialogues(train: list[str], fraction: float, seed: int) -> set[str]:
    """A deterministic ``fraction`` of the training dialogues (by name) held out as dev."""
    if fraction <= 0 or len(train) < 2:
        return set()
    n = min(len(train) - 1, max(1, round(fraction * len(train))))
    names = sorted(train)
    random.Random(seed).shuffle(names)
    return set(names[:n])


def _check(opts: IemocapOptions) -> None:
    if opts.classes not in (4, 6):
        raise UserError(f"iemocap option classes must be 4 or 6, got {opts.classes}")
    if opts.marker_side not in ("left", "right"):
        raise UserError(f"iemocap option marker_side must be left or right, got {opts.marker_side!r}")
    if not 0.0 <= opts.dev_fraction < 1.0:
        raise UserError(f"iemocap option dev_fraction must be in [0, 1), got {opts.dev_fraction}")


def load_iemocap(root: Path, options: dict[str, str]) -> Corpus:
    """Read IEMOCAP from ``root`` (``IEMOCAP_full_release`` or its parent)."""
    opts = apply_overrides(IemocapOptions(), options, what="iemocap option")
    _check(opts)
    release = find_release(Path(root))
    codes = CODES6 if opts.classes == 6 else CODES4
    per_dialogue: dict[str, list[Utterance]] = {}
    for session, eval_file in _dialogue_files(release):
        dialog = eval_file.stem
        sdir = release / f"Session{session}"
        texts = read_transcript(sdir / "dialog" / "transcriptions" / f"{dialog}.txt")
        video = str(sdir / "dialog" / "avi" / "DivX" / f"{dialog}.avi")
        split = "test" if session == opts.test_session else "train"
        rows = sorted((r for r in read_evaluation(eval_file) if r[3] in codes), key=lambda r: (r[0], r[2]))
        utts = []
        for turn, (start, end, uid, code) in enumerate(rows):
            utts.append(Utterance(
                utterance_id=uid, dialogue_id=dialog, turn=turn, speaker=speaker_of(uid),
                text=texts.get(uid, ""), label=codes[code], split=split,
                audio=str(sdir / "sentences" / "wav" / dialog / f"{uid}.wav"), video=video,
                video_start=start, video_end=end,  # the wav is the utterance; the avi is the dialogue
                video_region=region_of(uid, opts.marker_side)))  # type: ignore[arg-type]
        if utts:
            per_dialogue[dialog] = utts
    train = [d for d, us in per_dialogue.items() if us[0].split == "train"]
    dev = dev_dialogues(train, opts.dev_fraction, opts.seed)
    utterances: list[Utterance] = []
    for dialog in sorted(per_dialogue):
        for u in per_dialogue[dialog]:
            utterances.append(replace(u, split="dev") if dialog in dev else u)
    return Corpus(name="iemocap", labels=list(LABELS6 if opts.classes == 6 else LABELS4),
                  utterances=utterances, root=str(release), options=asdict(opts))

