"""What dataset adapters produce: utterances (``Utterance``) in dialogue order, and the corpus
(``Corpus``) that holds them with its class list. Nothing here reads files or imports the rest of erc."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Literal

SPLITS = ("train", "dev", "test")

Region = Literal["left", "right"]


@dataclass(frozen=True)
class Utterance:
    """One utterance of a dialogue.

    ``audio`` / ``video`` are paths (absolute or relative to the working directory) or None when
    the dataset has no such media. ``start`` / ``end`` are seconds inside a longer file (None: the
    whole file) and apply to both media, unless ``video_start`` / ``video_end`` give the video its
    own segment (IEMOCAP: one wav per utterance, one avi per dialogue). ``video_region`` selects the
    half of a side-by-side frame that shows the speaker (IEMOCAP); None keeps the whole frame.
    """

    utterance_id: str
    dialogue_id: str
    turn: int
    speaker: str
    text: str
    label: str
    split: str
    audio: str | None = None
    video: str | None = None
    start: float | None = None
    end: float | None = None
    video_region: Region | None = None
    video_start: float | None = None
    video_end: float | None = None

    def segment(self, modality: str) -> tuple[float | None, float | None]:
        """(start, end) seconds of this utterance inside its ``modality`` file."""
        if modality == "video" and (self.video_start is not None or self.video_end is not None):
            return self.video_start, self.video_end
        return self.start, self.end


@dataclass
class Corpus:
    """A dataset read from disk: its class list (in label-index order) and its utterances.

    ``utterances`` are grouped by dialogue and ordered by turn inside each dialogue.

    What an adapter noticed while reading, for the checks before extraction
    (:mod:`erc.extract.preflight`): ``warnings``, doubtful values (one summary line each);
    ``media_searched``, per split, the folders it searched for media it did not find;
    ``expected_seconds``, utterance id -> the length of its clip according to the annotations
    (MELD's StartTime / EndTime), to flag clips that disagree.
    """

    name: str
    labels: list[str]
    utterances: list[Utterance]
    root: str = ""
    options: dict[str, object] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    media_searched: dict[str, list[str]] = field(default_factory=dict)
    expected_seconds: dict[str, float] = field(default_factory=dict)

    def dialogues(self) -> dict[str, list[Utterance]]:
        """Dialogue id -> its utterances in turn order (insertion order of first appearance)."""
        out: dict[str, list[Utterance]] = {}
        for u in self.utterances:
            out.setdefault(u.dialogue_id, []).append(u)
        return out

    def manifest_hash(self) -> str:
        """A hash of what identifies the utterance table (ids, dialogue, turn, speaker, label, split,
        text). Two corpora with the same hash produce caches that can be merged."""
        h = hashlib.sha256()
        for u in self.utterances:
            row = [u.utterance_id, u.dialogue_id, u.turn, u.speaker, u.label, u.split, u.text]
            h.update(json.dumps(row).encode())
            h.update(b"\n")
        h.update(json.dumps(self.labels).encode())
        return h.hexdigest()[:16]
