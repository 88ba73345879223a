"""MELD adapter: the official ``{train,dev,test}_sent_emo.csv`` files plus the mp4 clip folders.

Layouts found (``--root`` is the folder the release was unpacked in, or ``MELD.Raw`` itself):
the CSVs in the root, in ``MELD.Raw/`` (or ``MELD_Raw``, ``MELD``, ``data/MELD``, ``raw``) or in
per-split folders below those (``train/train_sent_emo.csv``); the clip folders (``train_splits``,
``dev_splits_complete``, ``output_repeated_splits_test``) beside them, in per-split folders
(``MELD.Raw/train/train_splits``, the common unpacking of ``train.tar.gz``) or beside the CSVs.
Errors name every path tried; a clip folder not found is recorded in ``Corpus.media_searched``
(with any archive still packed) for the media check before extraction.

The CSVs' StartTime / EndTime give each clip's expected length (``Corpus.expected_seconds``), which
the checks before extraction compare with the clips (and warn about spans over a minute, the
release's scene-long test clips ``dia38_utt4`` and ``dia220_utt0``, and empty ones).
"""

from __future__ import annotations

import csv
import logging
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from erc.config import apply_overrides
from erc.errors import UserError
from erc.corpus import Corpus, Utterance

log = logging.getLogger(__name__)

MELD_LABELS = ["neutral", "surprise", "fear", "sadness", "joy", "disgust", "anger"]

CSV_NAMES = {"train": "train_sent_emo.csv", "dev": "dev_sent_emo.csv", "test": "test_sent_emo.csv"}
CLIP_DIRS = {"train": "train_splits", "dev": "dev_splits_complete", "test": "output_repeated_splits_test"}
# Folders (relative to the root) that may hold the CSVs and clip folders, searched in this order;
# below each, a split's files may also sit in a folder named after the split.
PARENTS = (".", "MELD.Raw", "MELD_Raw", "MELD", "data/MELD", "raw")
ARCHIVES = (".tar.gz", ".tgz", ".tar", ".zip")
REQUIRED = ("Utterance", "Speaker", "Emotion", "Dialogue_ID", "Utterance_ID")
TIME = re.compile(r"^(\d+):(\d+):(\d+)[,.](\d+)$")

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


def _unique(paths: list[Path]) -> list[Path]:
    return list(dict.fromkeys(Path(os.path.normpath(p)) for p in paths))


def _candidates(bases: list[Path], split: str, name: str) -> list[Path]:
    """``base/name`` then ``base/<split>/name`` for every base, in order, without repeats."""
    return _unique([b / name for b in bases] + [b / split / name for b in bases])


def find_csv(root: Path, split: str) -> tuple[Path | None, list[Path]]:
    """The CSV of ``split`` under ``root`` (first of the common layouts), and every path tried."""
    tried = _candidates([root / p for p in PARENTS], split, CSV_NAMES[split])
    return next((p for p in tried if p.is_file()), None), tried


def find_clip_folder(root: Path, split: str, near: Path | None = None) -> tuple[Path | None, list[Path]]:
    """The clip folder of ``split`` (under ``root``'s common layouts, or beside / above the CSV
    folder ``near``), and every folder tried."""
    bases = [root / p for p in PARENTS] + ([near, near.parent] if near is not None else [])
    tried = _candidates(bases, split, CLIP_DIRS[split])
    return next((p for p in tried if p.is_dir()), None), tried


def packed_archives(folders: list[Path], split: str) -> list[Path]:
    """Archives (``train.tar.gz``, ``train_splits.zip`` ...) of ``split``'s clips in ``folders``:
    a release not yet unpacked."""
    stems = (split, CLIP_DIRS[split])
    found = [f for d in _unique(folders) if d.is_dir() for f in sorted(d.iterdir())
             if f.is_file() and f.name.lower().endswith(ARCHIVES) and f.name.lower().startswith(stems)]
    return _unique(found)


def clip_seconds(row: dict[str, str]) -> float | None:
    """EndTime - StartTime of a CSV row in seconds (``"00:13:31,060"``), None when unparsable."""
    times = []
    for col in ("StartTime", "EndTime"):
        m = TIME.match((row.get(col) or "").strip())
        if m is None:
            return None
        h, mi, se, frac = m.groups()
        times.append(int(h) * 3600 + int(mi) * 60 + int(se) + int(frac) / 10 ** len(frac))
    return times[1] - times[0]


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


def load_split(csv_path: Path, split: str, clips: Path | None, fix: bool = True,
               seconds: dict[str, float] | None = None) -> tuple[list[Utterance], int]:
    """Utterances of one split in dialogue order, and how many duplicate rows were dropped.
    ``seconds`` (when given) receives utterance id -> the CSV's EndTime - StartTime."""
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
            span = clip_seconds(row)
            if seconds is not None and span is not None:
                seconds[f"{split}_dia{d}_utt{u}"] = span
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
    csvs = {split: find_csv(root, split) for split in CSV_NAMES}
    for split, (path, tried) in csvs.items():
        if path is None:
            raise UserError(f"--root {root} is not a MELD folder: no {CSV_NAMES[split]} "
                            f"(tried {', '.join(str(p) for p in tried)})")
    corpus = Corpus(name="meld", labels=list(MELD_LABELS), utterances=[], root=str(root), options=asdict(opts))
    for split, (csv_path, _) in csvs.items():
        assert csv_path is not None
        clips, tried = find_clip_folder(root, split, csv_path.parent)
        if clips is None:
            packed = packed_archives([t.parent for t in tried], split)
            corpus.media_searched[split] = [f"{a} (an archive: unpack it)" for a in packed] + [str(t) for t in tried]
            log.info("MELD %s: no clip folder %s under %s; media disabled", split, CLIP_DIRS[split], root)
        part, dups = load_split(csv_path, split, clips, opts.fix_mojibake, corpus.expected_seconds)
        if dups:
            corpus.warnings.append(f"MELD {split}: {dups} duplicate (Dialogue_ID, Utterance_ID) rows dropped")
        corpus.utterances.extend(part)
    return corpus

