"""The runs a ``--run`` path names (one run, or a sweep's seeds) as one predictor: every utterance
of a cache (a file, or one held in memory) through each run's head, probabilities averaged.

Nothing here needs labels or a dev split: every utterance of the cache is predicted
(:func:`erc.train.inference.head_probs`); :mod:`erc.train.predictions` scores and writes them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from erc.errors import UserError
from erc.features.source import FeatureSource
from erc.train.dialogues import DialogueData
from erc.train.inference import HeadProbs, head_probs, prediction_frame
from erc.train.trained import LoadedRun, check_compatible, load_run, run_members


@dataclass
class Ensemble:
    """The trained runs a ``--run`` path names (one run, or a sweep's seeds), all on the same
    labels, encoder groups and frame settings."""

    runs: list[LoadedRun]
    dirs: list[Path]

    @property
    def first(self) -> LoadedRun:
        return self.runs[0]

    @property
    def labels(self) -> list[str]:
        return self.first.labels

    @property
    def encoders(self) -> dict[str, str]:
        """Modality -> encoder group the runs read."""
        return self.first.encoders

    @property
    def groups(self) -> dict[str, dict[str, Any]]:
        """Modality -> the provenance (attributes) of the cache group the runs were trained on."""
        return self.first.provenance.get("groups", {})

    @property
    def frames(self) -> list[str]:
        """Modalities whose frames some run's head reads."""
        return list(dict.fromkeys(m for r in self.runs for m in r.inputs.frame_dims))

    @property
    def max_frames(self) -> int | None:
        return self.first.config.get("train", {}).get("max_frames")

    def to(self, device: torch.device | str) -> Ensemble:
        for r in self.runs:
            r.head.to(device)
        return self


def load_ensemble(path: str | Path) -> Ensemble:
    """The run at ``path`` or the finished runs of the sweep folder ``path`` (UserError when there
    are none, or when they were trained on different labels, encoders or frame settings)."""
    dirs = run_members(path)
    runs = [load_run(d) for d in dirs]
    first = runs[0]
    for d, r in zip(dirs[1:], runs[1:]):
        what = None
        if r.labels != first.labels:
            what = "labels"
        elif r.encoders != first.encoders or _hashes(r) != _hashes(first):
            what = "encoder groups (or encoder configs)"
        elif r.config.get("train", {}).get("max_frames") != first.config.get("train", {}).get("max_frames"):
            what = "max_frames"
        if what:
            raise UserError(f"{d} and {dirs[0]} were trained on different {what}; the runs of an ensemble must "
                            "share their input")
    return Ensemble(runs, dirs)


def _hashes(run: LoadedRun) -> dict[str, Any]:
    return {m: g.get("attrs", {}).get("config_hash") for m, g in run.provenance.get("groups", {}).items()}


def ensemble_frame(ens: Ensemble, fc: FeatureSource, device: torch.device | str = "cpu", batch_size: int = 64,
                   embeddings: bool = False) -> pd.DataFrame:
    """One row per utterance of the cache, in row order (:func:`~erc.train.inference.prediction_frame`'s
    columns): probabilities averaged over the ensemble's runs; with ``embeddings``, an ``embedding``
    column holding the first run's representation ``[E]``.

    Refuses (UserError) a cache whose encoders, dims or label list differ from the runs'."""
    for r in ens.runs:
        check_compatible(r, fc)
    data = DialogueData(fc, ens.encoders, ens.frames, ens.max_frames, dev_fraction=None)
    n = len(data.utterance_ids)
    total: np.ndarray | None = None
    emb = None
    for k, r in enumerate(ens.runs):
        got = head_probs(r.head, data, None, device, batch_size, embeddings and k == 0).in_row_order(n)
        total = got.probs.astype(np.float64) if total is None else total + got.probs
        emb = got.embeddings if k == 0 else emb
    assert total is not None
    mean = (total / len(ens.runs)).astype(np.float32)
    return prediction_frame(data, HeadProbs(np.arange(n, dtype=np.int64), mean, emb), ens.labels)
