"""MELD adapter: the official ``{train,dev,test}_sent_emo.csv`` files plus the mp4 clip folders."""

from __future__ import annotations

import csv
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

from erc.config import apply_overrides
from erc.errors import UserError
from erc.corpus import Corpus, Utterance

log = logging.getLogger(__name__)

MELD_LABELS = ["neutral", "surprise", "fear", "sadness", "joy", "disgust", "anger"]

CSV_NAMES = {"train": "train_sent_emo.csv", "dev": "dev_sent_emo.csv", "test": "test_sent_emo.csv"}
CLIP_DIRS = {"train": "train_splits", "dev": "dev_splits_complete", "test": "output_repeated_splits_test"}
# Folders (relative to the root) that may hold the clip folders, searched in this order.
CLIP_PARENTS = (".", "MELD.Raw", "MELD_Raw", "MELD", "raw", "MELD.Raw/train", "MELD.Raw/dev", "MELD.Raw/test")
REQUIRED = ("Utterance", "Speaker", "Emotion", "Dialogue_ID", "Utterance_ID")

# Windows-1252 characters that show up as C1 control characters when MELD text was mis-decoded.
MOJIBAKE = {"\u0091": "'", "\u0092": "'", "\u0085": "...", "\u0093": '"', "\u0094": '"',
            "\u0096": "-", "\u0097": "-"}


@dataclass(frozen=True)
class MeldOptions:
    """Options of the MELD adapter (``--set dataset.<key>=<value>``)."""

    fix_mojibake: bool = True


def fix_text(text: str) -> str:
    """Replace the common MELD mojibake (C1 control characters) by their ASCII meaning.

    Only the listed characters change; correct Unicode (e.g. curly quotes) is left as is.
    """
    if not any(c in text for c in MOJIBAKE):
        return text
    return "".join(MOJIBAKE.get(c, c) for c in text)


def find_csv_folder(root: Path) -> Path:
    """The folder under ``root`` that holds the three CSVs (root itself, or a common subfolder)."""
    for cand in (root, root / "MELD.Raw", root / "MELD_Raw", root / "MELD", root / "data" / "MELD"):
        if all((cand / name).is_file() for name in CSV_NAMES.values()):
            return cand
    missing = [n for n in CSV_NAMES.values() if not (root / n).is_file()]
    raise UserError(f"--root {root} is not a MELD folder: missing {', '.join(missing)}")


def find_clip_folder(root: Path, split: str) -> Path | None:
    """The clip folder of ``split`` (root or a common subfolder), or None when absent."""
    for parent in CLIP_PARENTS:
        cand = root / parent / CLIP_DIRS[split]
        if cand.is_dir():
            return cand
    return None


def _read_rows(path: Path) -> list[dict[str, str]]:
    """Rows of one MELD CSV as dicts; a malformed file is a UserError."""
    try:
        with path.open(encoding="utf-8", errors="replace", newline="") as fh:
            reader = csv.DictReader(fh)
            header = [h.strip() for h in (reader.fieldnames or [])]
            missing = [c for c in REQUIRED if c not in header]
            if missing:
                raise UserError(f"{path} is not a MELD CSV: missing columns {', '.join(missing)}")
            reader.fieldnames = header
            return list(reader)
    except csv.Error as exc:
        raise UserError(f"{path} could not be parsed as CSV: {exc}") from None


def _int(value: str, path: Path, row: int, column: str) -> int:
    try:
        return int(float(value))
    except (TypeError, ValueError):
        raise UserError(f"{path} row {row}: {column} must be an integer, got {value!r}") from None


def load_split(csv_path: Path, split: str, clips: Path | None, fix: bool = True) -> tuple[list[Utterance], int]:
    """Utterances of one split in dialogue order, and how many duplicate rows were dropped."""
    rows = _read_rows(csv_path)
    seen: set[tuple[int, int]] = set()
    dialogues: dict[int, list[tuple[int, dict[str, str]]]] = {}
    duplicates = 0
    for i, row in enumerate(rows, start=2):
        d = _int(row["Dialogue_ID"], csv_path, i, "Dialogue_ID")
        u = _int(row["Utterance_ID"], csv_path, i, "Utterance_ID")
        label = (row["Emotion"] or "").strip().lower()
        if label not in MELD_LABELS:
            raise UserError(f"{csv_path} row {i}: unknown emotion {row['Emotion']!r} "
                            f"(expected one of {', '.join(MELD_LABELS)})")
        if (d, u) in seen:
            duplicates += 1
            continue
        seen.add((d, u))
        dialogues.setdefault(d, []).append((u, row))
    out: list[Utterance] = []
    for d in sorted(dialogues):
        for turn, (u, row) in enumerate(sorted(dialogues[d], key=lambda x: x[0])):
            clip = str(clips / f"dia{d}_utt{u}.mp4") if clips is not None else None
            text = row["Utterance"] or ""
            out.append(Utterance(
                utterance_id=f"{split}_dia{d}_utt{u}", dialogue_id=f"{split}_dia{d}", turn=turn,
                speaker=(row["Speaker"] or "").strip(), text=fix_text(text) if fix else text,
                label=row["Emotion"].strip().lower(), split=split, audio=clip, video=clip))
    return out, duplicates


def load_meld(root: Path, options: dict[str, str]) -> Corpus:
    """Read MELD from ``root`` (the folder with the three CSVs; clip folders optional)."""
    opts = apply_overrides(MeldOptions(), options, what="meld option")
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"--root {root} does not exist or is not a folder (expected the MELD folder "
                        f"with {', '.join(CSV_NAMES.values())})")
    csv_dir = find_csv_folder(root)
    utterances: list[Utterance] = []
    for split, name in CSV_NAMES.items():
        clips = find_clip_folder(root, split) or (find_clip_folder(csv_dir, split) if csv_dir != root else None)
        if clips is None:
            log.info("MELD %s: no clip folder %s under %s; media disabled", split, CLIP_DIRS[split], root)
        part, dups = load_split(csv_dir / name, split, clips, opts.fix_mojibake)
        if dups:
            log.warning("MELD %s: %d duplicate (Dialogue_ID, Utterance_ID) rows dropped", split, dups)
        utterances.extend(part)
    return Corpus(name="meld", labels=list(MELD_LABELS), utterances=utterances, root=str(root),
                  options=asdict(opts))
