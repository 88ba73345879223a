"""Dialogues from a feature cache as padded torch batches (:class:`erc.heads.base.DialogueBatch`).

Everything a batch needs is loaded once: pooled vectors as float32 tensors ``[N, D_m]``, label,
speaker and split codes ``[N]``, one row-index tensor per dialogue, and (for the modalities a head
asks for) frames as one ragged tensor ``[sum T, F_m]`` with offsets. :meth:`DialogueData.collate`
is pure tensor indexing: no per-utterance Python loop.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import Dataset

from erc.errors import UserError
from erc.features.reader import FeatureCache
from erc.features.source import FeatureSource
from erc.heads.base import DialogueBatch, HeadInputs
from erc.train.finite import refuse_non_finite
from erc.train.folds import FoldSpec, carve_dev, fold_splits

IGNORE = -100
MODALITY_ALIASES = {"t": "text", "a": "audio", "v": "video"}


def canonical_modality(name: str) -> str:
    """``t``/``a``/``v`` -> ``text``/``audio``/``video``; other names are kept."""
    name = name.strip().lower()
    return MODALITY_ALIASES.get(name, name)


def _factorize(values: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """Codes in order of first appearance: ``(codes [N], uniques)``."""
    index: dict[str, int] = {}
    codes = np.fromiter((index.setdefault(v, len(index)) for v in values), dtype=np.int64, count=len(values))
    return codes, list(index)


@dataclass
class _Frames:
    """Ragged frames of one modality: ``data [sum T, F]`` (stored dtype), ``offsets [N+1]``."""

    data: torch.Tensor
    offsets: torch.Tensor
    lengths: torch.Tensor


class DialogueSplit(Dataset):
    """The dialogues of one split: items are dialogue indices; ``collate`` builds a batch whose
    labels count only for utterances of this split."""

    def __init__(self, data: DialogueData, split: str, dialogues: list[int]) -> None:
        self.data, self.split, self.dialogues = data, split, dialogues

    def __len__(self) -> int:
        return len(self.dialogues)

    def __getitem__(self, i: int) -> int:
        return self.dialogues[i]

    def collate(self, items: Sequence[int]) -> DialogueBatch:
        return self.data.collate(items, split=self.split)


class DialogueData:
    """The chosen encoders of a cache, in memory, grouped into dialogues.

    modalities: modality -> encoder group (None: the cache's only / first group), or a list of
        modalities. ``t``/``a``/``v`` are accepted.
    frames: modalities whose frame sequences to load (a head's ``frames_for``).
    max_frames: keep at most the first ``max_frames`` frames of each utterance (steps: a group
        whose ``frame_tokens`` is K keeps ``max_frames * K`` rows).
    folds: replace the cache's splits by fold ``folds.fold`` of a k-fold CV (:meth:`for_fold`
        gives the other folds of the same data without reading the cache again).
    dev_fraction: when the cache has no dev split, that fraction of train dialogues becomes dev;
        None keeps the cache's splits as they are (prediction: nothing is carved or required).
    cache: a cache file's path or an open :class:`~erc.features.source.FeatureSource` (a
        :class:`FeatureCache`, or a :class:`~erc.features.memory_cache.MemoryCache`).
    """

    def __init__(
        self,
        cache: FeatureSource | str | Path,
        modalities: Mapping[str, str | None] | Sequence[str],
        frames: Sequence[str] = (),
        max_frames: int | None = None,
        folds: FoldSpec | None = None,
        dev_fraction: float | None = 0.1,
    ) -> None:
        own = isinstance(cache, (str, Path))
        fc = FeatureCache(cache) if own else cache
        try:
            self._load(fc, modalities, frames, max_frames, folds, dev_fraction)
        finally:
            if own:
                fc.close()

    # ---- loading ----------------------------------------------------------------------------
    def _load(self, fc: FeatureSource, modalities, frames, max_frames, folds, dev_fraction) -> None:  # noqa: ANN001
        self.cache_path = fc.path
        self.cache_attrs = fc.attrs
        self.folds = folds
        self.dev_fraction = dev_fraction
        self.labels: list[str] = fc.labels
        self.encoders = resolve_encoders(fc, modalities)
        self.groups = {m: fc.group(m, e) for m, e in self.encoders.items()}
        cols = fc.utterances()
        self.utterance_ids: list[str] = list(cols["utterance_id"])
        self.label_names: list[str] = list(cols["label"])
        n = len(self.utterance_ids)

        dlg_codes, self.dialogue_names = _factorize(cols["dialogue_id"])
        turns = np.asarray(cols.get("turn", np.arange(n)), dtype=np.int64)
        self.turns: np.ndarray = turns  # [N] int64
        self.speaker_names: list[str] = [str(v) for v in cols["speaker"]]
        order = np.lexsort((turns, dlg_codes))  # dialogues by first appearance, turns in order
        bounds = np.flatnonzero(np.diff(dlg_codes[order])) + 1
        self.dialogue_rows: list[torch.Tensor] = [torch.from_numpy(r.copy()) for r in np.split(order, bounds)]
        self.dialogue_codes = dlg_codes

        label_index = {name: i for i, name in enumerate(self.labels)}
        self.y = torch.tensor([label_index.get(v, IGNORE) for v in self.label_names], dtype=torch.long)
        speakers = np.zeros(n, dtype=np.int64)
        spk = np.asarray(cols["speaker"], dtype=object)
        for rows in self.dialogue_rows:
            r = rows.numpy()
            speakers[r] = _factorize(list(spk[r]))[0]
        self.speakers = torch.from_numpy(speakers)

        splits = np.asarray(cols["split"], dtype=object)
        if folds is not None:
            splits = fold_splits(dlg_codes, folds, self.dialogue_names, dev_fraction)
        elif dev_fraction is not None:
            splits = carve_dev(splits, dlg_codes, dev_fraction)
        self.set_splits(splits)

        self.pooled = {m: torch.from_numpy(fc.pooled(m, e)) for m, e in self.encoders.items()}
        self.present = {m: torch.from_numpy(fc.present(m, e)) for m, e in self.encoders.items()}
        for m, e in self.encoders.items():  # never train on NaN / Inf: refuse the group, naming rows
            refuse_non_finite(self.pooled[m], f"{fc.path} {m}/{e} pooled", self.utterance_ids)
        self.frames: dict[str, _Frames] = {}
        for m in frames:
            m = canonical_modality(m)
            if m not in self.encoders:
                raise UserError(f"frames of {m} requested but {m} is not among the modalities in use")
            got = fc.frames(m, self.encoders[m])
            if got is None:
                raise UserError(f"this head needs {m} frames, but {m}/{self.encoders[m]} in {fc.path} kept none")
            refuse_non_finite(got[0], f"{fc.path} {m}/{self.encoders[m]} frames", self.utterance_ids, got[1])
            k = self.groups[m].frame_tokens  # rows a step (a video frame's patch tokens), whole steps kept
            self.frames[m] = _truncate(got[0], got[1], max_frames * k if max_frames is not None else None)

    def for_fold(self, spec: FoldSpec) -> DialogueData:
        """The same data (tensors shared, not copied) with the splits of fold ``spec``."""
        view = copy.copy(self)
        view.folds = spec
        view.set_splits(fold_splits(self.dialogue_codes, spec, self.dialogue_names, self.dev_fraction))
        return view

    def provenance(self) -> dict[str, Any]:
        """What a run records of its input: the cache's path and attributes, and per modality the
        encoder group's name, dims, counts and attributes."""
        groups = {m: {"encoder": self.encoders[m], "dim": g.dim, "frame_dim": g.frame_dim, "n": g.n,
                      "n_present": g.n_present, "attrs": g.attrs} for m, g in self.groups.items()}
        return {"cache": str(self.cache_path), "cache_attrs": self.cache_attrs, "groups": groups}

    def set_splits(self, splits: np.ndarray) -> None:
        """Replace the per-utterance split names (``[N]`` str)."""
        self.split_names = sorted(set(splits.tolist()))
        code = {s: i for i, s in enumerate(self.split_names)}
        self.split_of = np.asarray(splits, dtype=object)
        self.split_codes = torch.tensor([code[s] for s in splits.tolist()], dtype=torch.long)

    # ---- public API -------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.dialogue_rows)

    @property
    def modalities(self) -> list[str]:
        return list(self.encoders)

    def inputs(self) -> HeadInputs:
        """Sizes for building a head: pooled dims, frame dims (loaded frames only), classes."""
        return HeadInputs(
            pooled_dims={m: g.dim for m, g in self.groups.items()},
            frame_dims={m: int(f.data.shape[1]) for m, f in self.frames.items()},
            n_classes=len(self.labels),
            frame_tokens={m: self.groups[m].frame_tokens for m in self.frames if self.groups[m].frame_tokens > 1},
        )

    def utterances_in(self, split: str) -> np.ndarray:
        """Rows (``[n]`` int) of the utterances assigned to ``split``."""
        return np.flatnonzero(self.split_of == split)

    def dataset(self, split: str) -> DialogueSplit:
        """The dialogues with at least one utterance in ``split`` (in cache order)."""
        if split not in self.split_names:
            return DialogueSplit(self, split, [])
        code = self.split_names.index(split)
        has = self.split_codes == code  # [N]
        keep = [i for i, rows in enumerate(self.dialogue_rows) if bool(has[rows].any())]
        return DialogueSplit(self, split, keep)

    def label_counts(self, split: str) -> torch.Tensor:
        """``[C]`` number of labelled utterances of each class in ``split``."""
        rows = torch.from_numpy(self.utterances_in(split))
        y = self.y[rows]
        return torch.bincount(y[y >= 0], minlength=len(self.labels))

    def collate(self, items: Sequence[int], split: str | None = None) -> DialogueBatch:
        """Pad dialogues ``items`` into a :class:`DialogueBatch` (B = len(items), L = longest).

        Labels are -100 at padding, for labels outside the label list and (when ``split`` is
        given) for utterances assigned to another split.
        """
        index = pad_sequence([self.dialogue_rows[i] for i in items], batch_first=True, padding_value=-1)  # [B, L]
        mask = index >= 0
        safe = index.clamp(min=0)
        labels = torch.where(mask, self.y[safe], IGNORE)
        if split is not None:
            code = self.split_names.index(split) if split in self.split_names else -1
            labels = torch.where(self.split_codes[safe] == code, labels, IGNORE)
        m = mask.unsqueeze(-1)
        pooled = {k: self.pooled[k][safe] * m for k in self.pooled}
        present = {k: self.present[k][safe] & mask for k in self.present}
        frames: dict[str, torch.Tensor] = {}
        frame_mask: dict[str, torch.Tensor] = {}
        for k, fr in self.frames.items():
            frames[k], frame_mask[k] = _pad_frames(fr, safe, mask)
        return DialogueBatch(
            mask=mask, labels=labels, speakers=torch.where(mask, self.speakers[safe], 0),
            pooled=pooled, present=present, frames=frames, frame_mask=frame_mask, index=index,
        )


def resolve_encoders(fc: FeatureSource, modalities: Mapping[str, str | None] | Sequence[str]) -> dict[str, str]:
    """Modality -> encoder group, checked against the cache (UserError naming what it has)."""
    wanted = dict(modalities) if isinstance(modalities, Mapping) else {m: None for m in modalities}
    if not wanted:
        raise UserError("no modalities selected")
    out: dict[str, str] = {}
    for m, enc in wanted.items():
        m = canonical_modality(m)
        have = fc.encoders(m)
        if not have:
            mods = sorted({g.modality for g in fc.groups()})
            raise UserError(f"{fc.path} has no {m} features (modalities in the cache: {', '.join(mods) or 'none'})")
        if enc is None:
            enc = have[0]
        elif enc not in have:
            raise UserError(f"{fc.path} has no {m} encoder {enc!r} (has: {', '.join(have)})")
        out[m] = enc
    return out


def _truncate(frames: np.ndarray, offsets: np.ndarray, max_frames: int | None) -> _Frames:
    """Keep the first ``max_frames`` frames of each utterance (vectorised row gather)."""
    lengths = np.diff(offsets)
    if max_frames is not None and (lengths > max_frames).any():
        new_len = np.minimum(lengths, max_frames)
        starts = np.repeat(offsets[:-1], new_len)
        new_off = np.concatenate([[0], np.cumsum(new_len)])
        within = np.arange(int(new_off[-1])) - np.repeat(new_off[:-1], new_len)
        frames, offsets, lengths = frames[starts + within], new_off, new_len
    data = torch.from_numpy(np.ascontiguousarray(frames))
    if not data.is_floating_point():
        data = data.float()
    return _Frames(data, torch.from_numpy(np.asarray(offsets, dtype=np.int64)), torch.from_numpy(np.asarray(lengths, dtype=np.int64)))


def _pad_frames(fr: _Frames, safe: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Gather frames of the utterances ``safe [B, L]`` into ``[B, L, T, F]`` float32 + mask ``[B, L, T]``."""
    b, l = safe.shape
    flat = safe.reshape(-1)
    lens = torch.where(mask.reshape(-1), fr.lengths[flat], 0)  # [B*L]
    t_max = max(int(lens.max()) if lens.numel() else 0, 1)
    out = torch.zeros(b * l, t_max, fr.data.shape[1], dtype=torch.float32)
    total = int(lens.sum())
    if total:
        slot = torch.repeat_interleave(torch.arange(b * l), lens)
        first = torch.cumsum(lens, 0) - lens
        t = torch.arange(total) - torch.repeat_interleave(first, lens)
        src = torch.repeat_interleave(fr.offsets[flat], lens) + t
        out[slot, t] = fr.data[src].float()
    fmask = torch.arange(t_max).unsqueeze(0) < lens.unsqueeze(1)
    return out.view(b, l, t_max, -1), fmask.view(b, l, t_max)
