"""Checks of a corpus before any encoding, so that a wrong layout or doubtful data stops or warns
in seconds instead of yielding a cache of zeros:

- values no cache can hold (a NUL byte in any text): an error naming the utterance;
- a modality whose media are missing for more than :data:`MAX_MISSING_SHARE` of the utterances:
  an error naming the folders the dataset adapter searched, unless the modality is ``none`` or
  ``--allow-missing-media`` is given;
- doubtful values (:func:`erc.extract.datasets.checks.corpus_warnings`) and, when audio or video
  is extracted, annotated clip spans that are empty or longer than :data:`LONG_SPAN`, media
  segments that lie outside their file, and clips whose length disagrees with the annotations
  by more than :data:`CLIP_MARGIN` seconds, and media longer than what the encoder reads
  (``max_seconds``): one warning line each (errors with ``--strict``).

Only file headers are read (no decoding); each file once, on a few threads.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Iterable, Mapping

from erc.corpus import Corpus, Utterance
from erc.errors import MediaError, UserError
from erc.extract.datasets.checks import check_strings, corpus_warnings, examples
from erc.extract.media import media_duration

MEDIA = ("audio", "video")
MAX_MISSING_SHARE = 0.5  # more missing than this stops the run (unless --allow-missing-media)
SPAN_MARGIN = 1.0  # seconds a segment's end may pass the end of its file (rounding in annotations)
CLIP_MARGIN = 2.0  # seconds a clip's length may differ from the annotations' StartTime-EndTime
LONG_SPAN = 60.0  # seconds: an annotated clip span longer than this is a scene, not an utterance
PROBE_THREADS = 8
LONG_MARGIN = 0.5  # seconds media may pass an encoder's max_seconds before a warning (rounding)


def _path(u: Utterance, modality: str) -> str | None:
    return u.audio if modality == "audio" else u.video


def _exists(paths: Iterable[str]) -> dict[str, bool]:
    return {p: os.path.isfile(p) for p in set(paths)}


def missing_media(corpus: Corpus, modality: str) -> list[tuple[str, str]]:
    """``(utterance id, reason)`` of every utterance without a ``modality`` file on disk."""
    paths = [_path(u, modality) for u in corpus.utterances]
    exists = _exists(p for p in paths if p)
    return [(u.utterance_id, "no path" if not p else f"not found: {p}")
            for u, p in zip(corpus.utterances, paths) if not p or not exists[p]]


def _searched(corpus: Corpus, missing: list[tuple[str, str]]) -> str:
    """Where the media were looked for: the adapter's searched folders (archives first), else the
    folders the missing paths point into."""
    places = [f for folders in corpus.media_searched.values() for f in folders]
    if not places:
        places = list(dict.fromkeys(os.path.dirname(r.split(": ", 1)[1]) for _, r in missing if r != "no path"))
    if not places:
        return "the dataset gives no media paths"
    places = sorted(dict.fromkeys(places), key=lambda f: "archive" not in f)
    more = f" and {len(places) - 3} more" if len(places) > 3 else ""
    return "searched " + ", ".join(places[:3]) + more


def check_missing(corpus: Corpus, modalities: Iterable[str], allow: bool) -> list[str]:
    """UserError when a modality's media are missing for more than :data:`MAX_MISSING_SHARE` of the
    utterances (a warning instead when ``allow``); fewer are left to the per-utterance status."""
    warnings = []
    n = len(corpus.utterances)
    modalities = list(modalities)
    for m in modalities:
        missing = missing_media(corpus, m)
        if not n or len(missing) / n <= MAX_MISSING_SHARE:
            continue
        what = (f"{m} media are missing for {len(missing)} of {n} utterances ({100 * len(missing) / n:.0f}%; "
                f"{_searched(corpus, missing)}; e.g. {missing[0][0]}: {missing[0][1]})")
        if not allow:
            raise UserError(f"{what}; pass --{m} none to extract without {m}, or --allow-missing-media")
        warnings.append(what + "; extracting anyway (--allow-missing-media)")
    if modalities and corpus.media_searched and not warnings:  # a few splits without media: say why
        splits = ", ".join(corpus.media_searched)
        warnings.append(f"no media folder found for split(s) {splits} ({_searched(corpus, [])}); "
                        "their utterances are extracted as missing")
    return warnings


def _durations(paths: Iterable[str]) -> dict[str, float | None]:
    """Length in seconds of each file from its header (None when unreadable: extraction reports it)."""
    def probe(p: str) -> float | None:
        try:
            return media_duration(p)
        except MediaError:
            return None

    unique = sorted(set(paths))
    with ThreadPoolExecutor(max_workers=PROBE_THREADS) as pool:
        return dict(zip(unique, pool.map(probe, unique)))


def check_spans(corpus: Corpus) -> list[str]:
    """Warnings for annotated clip spans (``corpus.expected_seconds``) that cannot be one
    utterance: longer than :data:`LONG_SPAN`, or empty."""
    spans = corpus.expected_seconds
    out = []
    long = sorted((uid for uid, s in spans.items() if s > LONG_SPAN), key=lambda uid: -spans[uid])
    if long:
        shown = examples(f"{uid} ({spans[uid]:.0f} s)" for uid in long)
        out.append(f"{len(long)} utterance(s) span more than {LONG_SPAN:.0f} s in the annotations (StartTime-EndTime): "
                   f"whole scenes rather than utterances, whose media features summarise minutes: {shown}")
    empty = [uid for uid, s in spans.items() if s <= 0]
    if empty:
        out.append(f"{len(empty)} utterance(s) have an empty StartTime-EndTime span: {examples(empty)}")
    return out


def _outside(u: Utterance, modality: str, total: float) -> str | None:
    """``"u1 (100-120 s of a 30.0 s file)"`` when ``u``'s segment starts after the end of its file
    or ends more than :data:`SPAN_MARGIN` after it, else None."""
    start, end = u.segment(modality)
    if (start or 0.0) < total and (end is None or end <= total + SPAN_MARGIN):
        return None
    return f"{u.utterance_id} ({start or 0:g}-{'end' if end is None else f'{end:g}'} s of a {total:.1f} s file)"


def check_segments(corpus: Corpus, modalities: list[str]) -> list[str]:
    """Warnings for segments (start / end) outside their file, and for whole-file clips whose
    length differs from ``corpus.expected_seconds`` by more than :data:`CLIP_MARGIN`."""
    spans = {m: [(u, p) for u in corpus.utterances if (p := _path(u, m)) and u.segment(m) != (None, None)]
             for m in modalities}
    clips = []  # (utterance, its clip): one file per utterance, both media in it (MELD)
    for u in corpus.utterances:
        path = next((p for m in modalities if (p := _path(u, m)) and u.segment(m) == (None, None)), None)
        if path and u.utterance_id in corpus.expected_seconds:
            clips.append((u, path))
    exists = _exists([p for pairs in spans.values() for _, p in pairs] + [p for _, p in clips])
    length = _durations(p for p, ok in exists.items() if ok)
    out = []
    for m, pairs in spans.items():
        outside = [found for u, p in pairs if length.get(p) is not None
                   and (found := _outside(u, m, length[p])) is not None]  # type: ignore[arg-type]
        if outside:
            out.append(f"{len(outside)} utterance(s) have {m} segments outside their file (starting after its "
                       f"end, or ending more than {SPAN_MARGIN:g} s after it): {examples(outside)}")
    disagree = []
    for u, p in clips:
        total, want = length.get(p), corpus.expected_seconds[u.utterance_id]
        if total is not None and abs(total - want) > CLIP_MARGIN:
            disagree.append(f"{u.utterance_id} (clip {total:.1f} s, CSV {want:.1f} s)")
    if disagree:
        out.append(f"{len(disagree)} clip(s) differ in length from their StartTime-EndTime by more than "
                   f"{CLIP_MARGIN:g} s: {examples(disagree)}")
    return out


def check_long_media(corpus: Corpus, max_seconds: Mapping[str, float]) -> list[str]:
    """Warnings for utterances whose media are longer than their encoder's ``max_seconds`` (an
    encoder reads only the first ``max_seconds`` of each): counts and the longest examples. A
    segment with an end is measured from its annotations; other files from their headers."""
    out = []
    for m, limit in max_seconds.items():
        if m not in MEDIA or not limit or limit <= 0:
            continue
        lengths: dict[str, float] = {}
        probe: list[tuple[Utterance, str, float]] = []
        for u in corpus.utterances:
            path = _path(u, m)
            start, end = u.segment(m)
            if path and end is not None:
                lengths[u.utterance_id] = end - (start or 0.0)
            elif path:
                probe.append((u, path, start or 0.0))
        exists = _exists(p for _, p, _ in probe)
        total = _durations(p for p, ok in exists.items() if ok)
        for u, path, start in probe:
            if total.get(path) is not None:
                lengths[u.utterance_id] = total[path] - start  # type: ignore[operator]
        long = sorted((uid for uid, s in lengths.items() if s > limit + LONG_MARGIN), key=lambda uid: -lengths[uid])
        if long:
            shown = examples(f"{uid} ({lengths[uid]:.0f} s)" for uid in long)
            out.append(f"{len(long)} utterance(s) have {m} longer than the encoder's max_seconds={limit:g}; only their "
                       f"first {limit:g} s are encoded (--set {m}.max_seconds=0 reads all): {shown}")
    return out


def preflight(corpus: Corpus, modalities: Iterable[str], strict: bool = False,
              allow_missing_media: bool = False, max_seconds: Mapping[str, float] | None = None) -> list[str]:
    """Run every check on ``corpus`` for the media ``modalities`` in use; return the warnings
    (one line each). Errors, and with ``strict`` any warning, raise a UserError. ``max_seconds``:
    per modality, how much of each utterance's media its encoder reads (0: all)."""
    media = [m for m in modalities if m in MEDIA]
    check_strings(corpus)
    warnings = check_missing(corpus, media, allow_missing_media)
    warnings += corpus_warnings(corpus)
    if media:  # what concerns the clips only when audio or video is extracted
        warnings += check_spans(corpus) + check_segments(corpus, media)
        warnings += check_long_media(corpus, {m: s for m, s in (max_seconds or {}).items() if m in media})
    if strict and warnings:
        more = f" (and {len(warnings) - 1} more)" if len(warnings) > 1 else ""
        raise UserError(f"--strict: {warnings[0]}{more}")
    return warnings
