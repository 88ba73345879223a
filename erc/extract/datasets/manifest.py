"""Manifest adapter: any dataset as a CSV or JSONL file with the ``Utterance`` columns.

Required columns: ``dialogue_id, utterance_id, text``. Optional: ``label`` (an empty or absent label:
an unlabelled utterance, as for new conversations to predict), ``split`` (default ``test``),
``turn`` (default: order within the dialogue), ``speaker`` (default ""), ``audio``, ``video``,
``start``, ``end``, ``video_region``. Relative media paths resolve against the manifest file's folder.

Options: ``labels`` (the class order), ``label_map`` (rename or drop labels before anything else:
``"excited:happiness,frustration:"`` merges excited into happiness and drops the frustration
utterances; ``iemocap4`` is IEMOCAP's four-class set from its six classes, as
``--dataset iemocap --set dataset.classes=4`` builds it from the release).
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from erc.config import apply_overrides
from erc.errors import UserError
from erc.corpus import Corpus, Utterance
from erc.extract.datasets.checks import (check_column_names, check_row_values, check_span, decode_utf8, examples,
                                         nfc, seconds_value, turn_value, unnormalised)
from erc.extract.datasets.iemocap import CODES4, CODES6
from erc.extract.datasets.iemocap import LABELS4 as IEMOCAP4_LABELS
from erc.extract.datasets.iemocap import LABELS6 as IEMOCAP_LABELS
from erc.extract.datasets.meld import MELD_LABELS

REQUIRED = ("dialogue_id", "utterance_id", "text")
ALIASES = {"emotion": "label", "emotions": "label", "class": "label", "utterance": "text", "transcript": "text",
           "sentence": "text", "dialog_id": "dialogue_id", "conversation_id": "dialogue_id", "speaker_id": "speaker",
           "wav": "audio", "audio_path": "audio", "video_path": "video", "clip": "video"}  # said in the warning
COLUMNS = ("dialogue_id", "utterance_id", "turn", "speaker", "text", "label", "split", "audio", "video", "start",
           "end", "video_region")
DEFAULT_SPLIT = "test"  # rows without a split column: data to be predicted
SPLIT_ALIASES = {"train": "train", "training": "train", "dev": "dev", "val": "dev", "valid": "dev",
                 "validation": "dev", "test": "test", "testing": "test"}
REGIONS = {"left", "right"}


@dataclass(frozen=True)
class ManifestOptions:
    """Options of the manifest adapter (``--set dataset.<key>=<value>``)."""

    labels: str = ""
    label_map: str = ""


# named label maps; "iemocap4": the IEMOCAP reader's four classes from its six (excited:happiness,frustration:)
LABEL_MAPS = {"iemocap4": ",".join(f"{CODES6[c]}:{CODES4.get(c, '')}" for c in CODES6 if CODES4.get(c) != CODES6[c])}


def _read_csv(path: Path) -> list[dict[str, object]]:
    text = decode_utf8(path.read_bytes(), path)
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        if reader.fieldnames:
            reader.fieldnames = [h.strip() for h in reader.fieldnames]
        return [dict(r) for r in reader]
    except csv.Error as exc:
        raise UserError(f"manifest {path} could not be read as CSV: {exc}") from None


def _read_jsonl(path: Path) -> list[dict[str, object]]:
    rows = []
    text = decode_utf8(path.read_bytes(), path)
    for i, line in enumerate(text.split("\n"), start=1):  # not splitlines: JSON strings may hold U+2028
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"manifest {path} line {i} is not valid JSON: {exc.msg}") from None
        if not isinstance(row, dict):
            raise UserError(f"manifest {path} line {i} is not a JSON object")
        rows.append(row)
    return rows


def read_rows(path: Path) -> list[dict[str, object]]:
    """The rows of a ``.csv`` / ``.jsonl`` manifest; a missing, empty or unknown file is a UserError."""
    if not path.is_file():
        raise UserError(f"manifest {path} does not exist (--root must be a .csv or .jsonl file)")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        rows = _read_csv(path)
    elif suffix in (".jsonl", ".ndjson"):
        rows = _read_jsonl(path)
    else:
        raise UserError(f"manifest {path} has unknown extension {path.suffix!r}; use .csv or .jsonl")
    if not rows:
        raise UserError(f"manifest {path} is empty: no utterance rows")
    return rows


def _blank(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or str(value).strip() == ""


def _media(value: object, base: Path) -> str | None:
    if _blank(value):
        return None
    p = Path(str(value).strip()).expanduser()
    return str(p if p.is_absolute() else base / p)


def default_labels(found: set[str]) -> list[str]:
    """IEMOCAP's or MELD's class order when the label set is exactly theirs, else sorted."""
    for known in (IEMOCAP_LABELS, IEMOCAP4_LABELS, MELD_LABELS):
        if found == set(known):
            return list(known)
    return sorted(found)


def _labels(option: str, found: set[str], path: Path) -> list[str]:
    if not option.strip():
        return default_labels(found)
    labels = [nfc(x.strip()) for x in option.split(",") if x.strip()]
    if len(set(labels)) != len(labels):
        raise UserError(f"manifest option labels lists a label twice: {option!r}")
    unknown = sorted(found - set(labels))
    if unknown:
        raise UserError(f"manifest {path} has labels not in the labels option: {', '.join(unknown[:5])}")
    return labels


def parse_label_map(option: str) -> dict[str, str | None]:
    """``"old:new,gone:"`` -> ``{"old": "new", "gone": None}`` (None drops the utterance); a name of
    ``LABEL_MAPS`` stands for its map."""
    spec = LABEL_MAPS.get(option.strip().lower(), option)
    out: dict[str, str | None] = {}
    for part in (p for p in spec.split(",") if p.strip()):
        old, sep, new = part.partition(":")
        if not sep or not old.strip():
            raise UserError(f"manifest option label_map takes old:new pairs (old: drops the label) or one of "
                            f"{', '.join(LABEL_MAPS)}; got {option!r}")
        out[nfc(old.strip())] = nfc(new.strip()) or None
    return out


def _check_columns(rows: list[dict[str, object]], path: Path) -> list[str]:
    """UserError for a required key missing from any row, or a column named like a known one in
    another case or spelling (``Label``); the warnings: columns erc does not read."""
    columns = list(dict.fromkeys(k for row in rows for k in row if isinstance(k, str)))
    check_column_names(columns, COLUMNS, f"manifest {path}")
    for i, row in enumerate(rows):
        missing = [c for c in REQUIRED if c not in row]
        if missing and i == 0:
            raise UserError(f"manifest {path} lacks required column(s): {', '.join(missing)} "
                            f"(required: {', '.join(REQUIRED)})")
        if missing:
            raise UserError(f"manifest {path} row {i + 1} lacks required key(s): {', '.join(missing)} "
                            f"(every row needs {', '.join(REQUIRED)})")
    unknown = [c + (f" (is it {ALIASES[c.casefold()]}?)" if c.casefold() in ALIASES else "")
               for c in columns if c not in COLUMNS]
    warnings = []
    if unknown:
        warnings.append(f"{len(unknown)} column(s) of {path.name} are not read by erc: {examples(unknown)} "
                        f"(it reads {', '.join(COLUMNS)})")
    for i, row in enumerate(rows):
        gaps = [c for c in ("dialogue_id", "utterance_id", "split") if c in row and _blank(row.get(c))]
        if gaps:
            raise UserError(f"manifest {path} row {i + 1}: empty {', '.join(gaps)}")
    return warnings


def _row_to_utterance(row: dict[str, object], split: str, base: Path, where: str) -> Utterance:
    region = None if _blank(row.get("video_region")) else str(row["video_region"]).strip().lower()
    if region is not None and region not in REGIONS:
        raise UserError(f"{where}: video_region must be left or right, got {row['video_region']!r}")
    turn = turn_value(row.get("turn"), f"{where}: turn")
    start, end = seconds_value(row.get("start"), f"{where}: start"), seconds_value(row.get("end"), f"{where}: end")
    check_span(start, end, where)
    return Utterance(
        utterance_id=nfc(str(row["utterance_id"]).strip()), dialogue_id=nfc(str(row["dialogue_id"]).strip()),
        turn=-1 if turn is None else int(turn),
        speaker="" if _blank(row.get("speaker")) else nfc(str(row["speaker"]).strip()),
        text="" if _blank(row.get("text")) else str(row["text"]),
        label="" if _blank(row.get("label")) else nfc(str(row["label"]).strip()), split=split,
        audio=_media(row.get("audio"), base), video=_media(row.get("video"), base),
        start=start, end=end,
        video_region=region)  # type: ignore[arg-type]


def _order(utts: list[Utterance]) -> list[Utterance]:
    """Group by dialogue (first appearance), sort by given turn (file order breaks ties), renumber
    turns 0..n-1 where the manifest had none."""
    groups: dict[str, list[tuple[int, Utterance]]] = {}
    for i, u in enumerate(utts):
        groups.setdefault(u.dialogue_id, []).append((i, u))
    out: list[Utterance] = []
    for members in groups.values():
        if all(u.turn >= 0 for _, u in members):
            members.sort(key=lambda x: (x[1].turn, x[0]))
            out.extend(u for _, u in members)
        else:
            out.extend(Utterance(**{**asdict(u), "turn": k}) for k, (_, u) in enumerate(members))
    return out


def load_manifest(root: Path, options: dict[str, str]) -> Corpus:
    """Read a manifest file (``root`` is the ``.csv`` / ``.jsonl`` file itself)."""
    opts = apply_overrides(ManifestOptions(), options, what="manifest option")
    path = Path(root)
    rows = read_rows(path)
    for i, row in enumerate(rows):  # no list / object values, no NUL bytes, no extra CSV fields
        check_row_values(row, f"manifest {path} row {i + 1}")
    warnings = _check_columns(rows, path) + unnormalised(rows, ("utterance_id", "dialogue_id", "speaker", "label"))
    base = path.resolve().parent
    bad = sorted({str(r["split"]) for r in rows if str(r.get("split", DEFAULT_SPLIT)).strip().lower() not in SPLIT_ALIASES})
    if bad:
        raise UserError(f"manifest {path} has bad split value(s) {', '.join(map(repr, bad[:5]))}; "
                        f"use train, dev (or val/valid/validation) or test")
    utts = [_row_to_utterance(r, SPLIT_ALIASES[str(r.get("split", DEFAULT_SPLIT)).strip().lower()], base,
                              f"manifest {path} row {i + 1}") for i, r in enumerate(rows)]
    mapping = parse_label_map(opts.label_map)
    if mapping:
        unknown = sorted(set(mapping) - {u.label for u in utts})
        if unknown:
            raise UserError(f"manifest option label_map names label(s) the manifest lacks: {', '.join(unknown)}")
        # a label mapped to nothing drops its utterances; unlabelled utterances ("") are kept
        utts = [replace(u, label=mapping.get(u.label) or u.label) for u in utts
                if not (u.label in mapping and mapping[u.label] is None)]
        if not utts:
            raise UserError(f"manifest option label_map {opts.label_map!r} drops every utterance of {path}")
    seen: set[str] = set()
    dups: list[str] = []
    for u in utts:
        if u.utterance_id in seen and u.utterance_id not in dups:
            dups.append(u.utterance_id)
        seen.add(u.utterance_id)
    if dups:
        raise UserError(f"manifest {path} has {len(dups)} duplicate utterance_id(s), e.g. "
                        f"{', '.join(dups[:3])}")
    labels = _labels(opts.labels, {u.label for u in utts if u.label}, path)
    ordered = _order(utts)
    if mapping:  # dropped utterances leave no gaps in the turns (as the iemocap reader's four classes)
        count: Counter[str] = Counter()
        renumbered = []
        for u in ordered:
            renumbered.append(replace(u, turn=count[u.dialogue_id]))
            count[u.dialogue_id] += 1
        ordered = renumbered
    return Corpus(name=path.stem, labels=labels, utterances=ordered, root=str(path),
                  options=asdict(opts), warnings=warnings)
