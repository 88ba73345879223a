"""Checks of a dataset's values as they are read.

Errors (a :class:`~erc.errors.UserError` naming the file and row): text that is not UTF-8, NUL
bytes, list- or object-valued fields, numbers that are not finite or out of range. These are
values no encoder or cache can hold, so they stop the run before any work.

Warnings (:func:`corpus_warnings`, one summary line each with counts and examples): values that
are probably mistakes but can be trained on: empty texts, labels differing only in case, rare
labels and labels missing from train, dialogues whose utterances sit in several splits. The CLI
prints them, or with ``--strict`` refuses the dataset (:func:`erc.extract.preflight.preflight`).
"""

from __future__ import annotations

import collections
import math
import unicodedata
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from erc.corpus import SPLITS, Corpus
from erc.errors import UserError

MAX_TURN = 2**31 - 1  # turns are stored as int64; anything near that is a typo
MAX_SECONDS = 10 * 24 * 3600.0  # a start / end beyond ten days into a file is a typo
RARE = 5  # a label with fewer labelled train utterances than this is "rare"
EXAMPLES = 3


def examples(items: Iterable[object], n: int = EXAMPLES) -> str:
    """``"a, b, c, ..."``: the first ``n`` items, and an ellipsis when there are more."""
    items = list(items)
    return ", ".join(map(str, items[:n])) + (", ..." if len(items) > n else "")


# ---- errors: values that cannot be stored ------------------------------------------------------
def decode_utf8(data: bytes, path: Path) -> str:
    """``data`` decoded as UTF-8 (a BOM dropped); a bad byte is a UserError naming line and column."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise UserError(f"manifest {path} line {line} is not UTF-8 (byte 0x{data[e.start]:02x} at column {column}); "
                        "save the file as UTF-8") from None


def check_row_values(row: Mapping[object, object], where: str) -> None:
    """Every value of a manifest row is a single value (not a list or object) without NUL bytes.
    A CSV row with more values than the header has columns holds them under the key None."""
    for key, value in row.items():
        if key is None:
            raise UserError(f"{where} has more values than the header has columns")
        if isinstance(value, (list, tuple, dict)):
            kind = "an object" if isinstance(value, dict) else "a list"
            raise UserError(f"{where}: {key} is {kind} ({str(value)[:40]}); expected a single value")
        if isinstance(value, str) and "\x00" in value:
            raise UserError(f"{where}: {key} contains a NUL byte")


def _number(value: object, where: str) -> float | None:
    """None for an absent value (None or blank text); else a finite float (UserError otherwise).
    A JSON ``NaN`` is refused, not read as absent."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        raise UserError(f"{where} must be a number, got {value!r}")
    try:
        x = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise UserError(f"{where} must be a number, got {value!r}") from None
    if not math.isfinite(x):
        raise UserError(f"{where} must be a finite number, got {value!r}")
    return x


def turn_value(value: object, where: str) -> int | None:
    """A turn index: absent (None), or a whole number in ``[0, 2**31)``."""
    x = _number(value, where)
    if x is None:
        return None
    if not x.is_integer() or not 0 <= x <= MAX_TURN:
        raise UserError(f"{where} must be a whole number from 0 to {MAX_TURN}, got {value!r}")
    return int(x)


def seconds_value(value: object, where: str) -> float | None:
    """A time in seconds inside a media file: absent (None), or finite in ``[0, ten days]``."""
    x = _number(value, where)
    if x is not None and not 0 <= x <= MAX_SECONDS:
        raise UserError(f"{where} must be seconds from 0 to {MAX_SECONDS:.0f}, got {value!r}")
    return x


def check_span(start: float | None, end: float | None, where: str) -> None:
    """``end`` after ``start`` when both are given."""
    if start is not None and end is not None and end <= start:
        raise UserError(f"{where}: end ({end}) is not after start ({start})")


def check_strings(corpus: Corpus) -> None:
    """No NUL byte in any text field of any utterance (HDF5 strings cannot hold one): a UserError
    naming the first utterance and field. Every dataset, not only manifests."""
    for u in corpus.utterances:
        for name in ("utterance_id", "dialogue_id", "speaker", "text", "label", "split"):
            value = getattr(u, name)
            if isinstance(value, str) and "\x00" in value:
                raise UserError(f"{corpus.name}: utterance {u.utterance_id!r} has a NUL byte in its {name}")


def _squash(name: str) -> str:
    return "".join(ch for ch in name.casefold() if ch.isalnum())


def check_column_names(columns: Iterable[str], known: Sequence[str], where: str) -> None:
    """UserError for a column named like a known one but spelled otherwise (``Label``, ``Split``,
    ``Utterance ID``): read as an unknown column, it would leave the data silently unlabelled."""
    by_squash = {_squash(k): k for k in known}
    for col in columns:
        want = by_squash.get(_squash(col))
        if want is not None and col != want:
            raise UserError(f"{where} has a column {col!r}; erc reads {want!r} (column names are lower case, "
                            "with underscores): rename the column")


def nfc(value: str) -> str:
    """``value`` in Unicode normal form C, so that ``colère`` typed composed or decomposed is one
    label, one id."""
    return unicodedata.normalize("NFC", value)


def unnormalised(rows: Iterable[Mapping[object, object]], keys: Sequence[str]) -> list[str]:
    """A warning (list of at most one line) counting the values of ``keys`` that were not in Unicode
    NFC and are normalised as they are read."""
    found = [str(row[k]) for row in rows for k in keys
             if isinstance(row.get(k), str) and not unicodedata.is_normalized("NFC", str(row[k]))]
    if not found:
        return []
    return [f"{len(found)} id(s) or label(s) were not in Unicode normal form NFC and were normalised, so that "
            f"look-alike spellings are one value: {examples(repr(v) for v in dict.fromkeys(found))}"]


# ---- warnings: values that are probably mistakes ----------------------------------------------
def duplicate_turns(corpus: Corpus) -> list[str]:
    """``"d1 (turn 3 x2)"`` for each dialogue that gives one turn number to several utterances."""
    out = []
    for dialogue, utts in corpus.dialogues().items():
        counts = collections.Counter(u.turn for u in utts if u.turn >= 0)
        dup = sorted(t for t, c in counts.items() if c > 1)
        if dup:
            out.append(f"{dialogue} (" + ", ".join(f"turn {t} x{counts[t]}" for t in dup[:EXAMPLES]) + ")")
    return out


def corpus_warnings(corpus: Corpus) -> list[str]:
    """One line per kind of doubtful value in ``corpus`` (empty list: nothing doubtful)."""
    out = list(corpus.warnings)
    utts = corpus.utterances
    empty = [u.utterance_id for u in utts if not u.text.strip()]
    if empty:
        out.append(f"{len(empty)} of {len(utts)} utterances have an empty text ({examples(empty)})")
    labelled = [u for u in utts if u.label]
    counts = collections.Counter(u.label for u in labelled)
    by_fold: dict[str, list[str]] = collections.defaultdict(list)
    for label in counts:
        by_fold[label.casefold()].append(label)
    variants = [sorted(v) for v in by_fold.values() if len(v) > 1]
    if variants:
        shown = "; ".join(" / ".join(f"{lab} ({counts[lab]})" for lab in v) for v in variants[:EXAMPLES])
        out.append(f"{len(variants)} label(s) differ only in case and count as separate classes: {shown}")
    train = collections.Counter(u.label for u in labelled if u.split == "train")
    if train:  # a corpus with a train split (not unlabelled data to predict)
        absent = sorted(lab for lab in counts if lab not in train)
        if absent:
            where = {lab: sorted({u.split for u in labelled if u.label == lab}) for lab in absent}
            shown = ", ".join(f"{lab} ({counts[lab]} in {'+'.join(where[lab])})" for lab in absent[:EXAMPLES])
            out.append(f"{len(absent)} label(s) never appear in train, so no head can learn them: {shown}")
        rare = sorted((lab for lab in train if train[lab] < RARE), key=lambda lab: train[lab])
        if rare:
            shown = ", ".join(f"{lab} ({train[lab]})" for lab in rare[:EXAMPLES])
            out.append(f"{len(rare)} label(s) have fewer than {RARE} train utterances: {shown}")
    twice = duplicate_turns(corpus)
    if twice:
        out.append(f"{len(twice)} dialogue(s) number a turn more than once (kept in file order): {examples(twice)}")
    splits_of: dict[str, set[str]] = collections.defaultdict(set)
    for u in utts:
        if u.split in SPLITS:
            splits_of[u.dialogue_id].add(u.split)
    mixed = [f"{d} ({'+'.join(s for s in SPLITS if s in found)})" for d, found in splits_of.items() if len(found) > 1]
    if mixed:
        out.append(f"{len(mixed)} dialogue(s) have utterances in more than one split, so context heads see "
                   f"other splits' turns: {examples(mixed)}")
    return out
