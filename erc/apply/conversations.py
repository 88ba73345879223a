"""Conversations given as plain Python objects or a DataFrame, read into a :class:`Corpus`.

Accepted forms (each utterance is a mapping):

- one conversation: ``[{"text": ..., "speaker": ..., "audio": ..., "video": ...}, ...]``;
- several: a list of such lists, or ``{dialogue_id: [utterance, ...], ...}``;
- a ``pandas.DataFrame`` with one row per utterance (``dialogue_id`` optional: without it the
  frame is one conversation).

Keys read from each utterance: ``text`` (required, may be empty), ``speaker``, ``audio``, ``video``
(paths; relative ones resolve against ``base``, the working directory by default), ``start``,
``end`` (seconds inside the media file), ``video_region`` (left / right), ``utterance_id``
(default ``<dialogue_id>_<position>``), ``turn`` (default: the position), ``label`` (optional; scored
when the run knows it) and ``split`` (default ``test``). Other keys are ignored.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence, Union

import pandas as pd

from erc.corpus import Corpus, Utterance
from erc.errors import UserError

Conversation = Sequence[Mapping[str, Any]]
Conversations = Union[Conversation, Sequence[Conversation], Mapping[str, Conversation], pd.DataFrame]


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or str(value).strip() == ""


def _number(value: Any, where: str) -> float | None:
    if _blank(value):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise UserError(f"{where} must be a number, got {value!r}") from None


def _path(value: Any, base: Path) -> str | None:
    if _blank(value):
        return None
    p = Path(str(value).strip()).expanduser()
    return str(p if p.is_absolute() else base / p)


def _grouped(rows: Iterable[Mapping[str, Any]], default: str = "d0") -> list[tuple[str, list[Mapping[str, Any]]]]:
    """Rows grouped by their ``dialogue_id`` (``default`` where they have none), in order of first
    appearance."""
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        if not isinstance(row, Mapping):
            raise UserError(f"an utterance is a {type(row).__name__}, not a dict")
        key = default if _blank(row.get("dialogue_id")) else str(row["dialogue_id"]).strip()
        groups.setdefault(key, []).append(row)
    return list(groups.items())


def _dialogues(conversations: Conversations) -> list[tuple[str, list[Mapping[str, Any]]]]:
    """``[(dialogue_id, utterances)]`` from any accepted form."""
    if isinstance(conversations, pd.DataFrame):
        return _grouped(conversations.to_dict("records"))
    if isinstance(conversations, Mapping):
        return [(str(k), list(v)) for k, v in conversations.items()]
    if isinstance(conversations, (str, bytes)) or not isinstance(conversations, Iterable):
        raise UserError("conversations must be a list of utterance dicts, a list of such lists, a dict "
                        "dialogue_id -> list, or a pandas DataFrame")
    items = list(conversations)
    if all(isinstance(u, Mapping) for u in items):
        return _grouped(items)
    if all(isinstance(c, (list, tuple)) for c in items):
        return [pair for k, c in enumerate(items) for pair in _grouped(c, f"d{k}")]
    raise UserError("conversations must be a list of utterance dicts, a list of such lists, a dict "
                    "dialogue_id -> list, or a pandas DataFrame")


def _utterance(u: Any, dialogue_id: str, pos: int, base: Path) -> Utterance:
    where = f"conversation {dialogue_id!r} utterance {pos}"
    if not isinstance(u, Mapping):
        raise UserError(f"{where} is a {type(u).__name__}, not a dict")
    if "text" not in u:
        raise UserError(f"{where} has no 'text' (give an empty string for an utterance without words)")
    region = None if _blank(u.get("video_region")) else str(u["video_region"]).strip().lower()
    if region not in (None, "left", "right"):
        raise UserError(f"{where}: video_region must be left or right, got {u['video_region']!r}")
    turn = _number(u.get("turn"), f"{where}: turn")
    return Utterance(
        utterance_id=f"{dialogue_id}_{pos}" if _blank(u.get("utterance_id")) else str(u["utterance_id"]).strip(),
        dialogue_id=dialogue_id, turn=-1 if turn is None else int(turn),
        speaker="" if _blank(u.get("speaker")) else str(u["speaker"]).strip(),
        text="" if _blank(u.get("text")) else str(u["text"]),
        label="" if _blank(u.get("label")) else str(u["label"]).strip(),
        split="test" if _blank(u.get("split")) else str(u["split"]).strip(),
        audio=_path(u.get("audio"), base), video=_path(u.get("video"), base),
        start=_number(u.get("start"), f"{where}: start"), end=_number(u.get("end"), f"{where}: end"),
        video_region=region)  # type: ignore[arg-type]


def _in_turn_order(utts: list[Utterance]) -> list[Utterance]:
    """By the given turns (position breaks ties) when every utterance has one, else as given
    with turns 0..n-1."""
    if utts and all(u.turn >= 0 for u in utts):
        return [u for _, u in sorted(enumerate(utts), key=lambda x: (x[1].turn, x[0]))]
    return [Utterance(**{**u.__dict__, "turn": k}) for k, u in enumerate(utts)]


def read_conversations(conversations: Conversations, labels: Iterable[str], name: str = "conversations",
                       base: str | Path | None = None) -> Corpus:
    """A :class:`Corpus` of ``conversations`` (see the module docstring) with the class list
    ``labels`` (a run's). UserError on a malformed input or duplicate utterance ids."""
    root = Path(base) if base is not None else Path.cwd()
    out: list[Utterance] = []
    for dialogue_id, utts in _dialogues(conversations):
        if not dialogue_id.strip():
            raise UserError("a conversation has an empty dialogue_id")
        out.extend(_in_turn_order([_utterance(u, dialogue_id, k, root) for k, u in enumerate(utts)]))
    if not out:
        raise UserError("no utterances to predict")
    seen: set[str] = set()
    for u in out:
        if u.utterance_id in seen:
            raise UserError(f"utterance_id {u.utterance_id!r} appears twice; utterance ids must be unique")
        seen.add(u.utterance_id)
    return Corpus(name=name, labels=list(labels), utterances=out, root=str(root))
