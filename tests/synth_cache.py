"""Write small synthetic feature caches (the layout of :mod:`erc.features.schema`) for tests.

Two regimes:

- ``context_only=False``: each utterance's pooled vectors carry a noisy class prototype, so a
  context-free model (MLP) can learn the label from any modality.
- ``context_only=True``: utterance features carry NO label information beyond a *cue* that is
  set only in the first utterance of each dialogue; every utterance's label is the dialogue's
  mood, so only a model that reads the dialogue context can predict turns 2..n.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import h5py
import numpy as np

DEFAULT_DIMS = {"text": 16, "audio": 12, "video": 10}


def write_synthetic_cache(
    path: str | Path,
    n_dialogues: int = 24,
    lengths: Sequence[int] | tuple[int, int] = (4, 10),
    dims: dict[str, int] | None = None,
    n_classes: int = 4,
    frames: dict[str, int] | None = None,
    context_only: bool = False,
    seed: int = 0,
    encoders: dict[str, str] | None = None,
    noise: float = 0.5,
    splits: tuple[float, float, float] = (0.6, 0.2, 0.2),
    unknown_label_rate: float = 0.0,
    missing_rate: float = 0.0,
) -> Path:
    """Write a cache and return its path.

    lengths: a ``(min, max)`` pair of dialogue lengths (inclusive), or an explicit list of
        ``n_dialogues`` lengths.
    dims: modality -> pooled dim. frames: modality -> frame dim (frames of 2..6 steps).
    encoders: modality -> encoder group name (default ``syn-<modality>``).
    unknown_label_rate: fraction of utterances labelled ``xxx`` (not in the label list).
    """
    rng = np.random.default_rng(seed)
    dims = dict(DEFAULT_DIMS if dims is None else dims)
    frames = frames or {}
    encoders = encoders or {}
    if len(lengths) == 2 and n_dialogues != 2:
        lens = rng.integers(lengths[0], lengths[1] + 1, size=n_dialogues)
    else:
        lens = np.asarray(lengths, dtype=int)
        assert len(lens) == n_dialogues
    labels = [f"c{i}" for i in range(n_classes)]
    n_train = int(round(splits[0] * n_dialogues))
    n_dev = int(round(splits[1] * n_dialogues))

    rows: dict[str, list] = {c: [] for c in ("utterance_id", "dialogue_id", "turn", "speaker", "label", "split", "text")}
    y: list[int] = []
    cue: list[int] = []  # class index shown as a cue, or -1 for none
    for d, n in enumerate(lens):
        split = "train" if d < n_train else "dev" if d < n_train + n_dev else "test"
        mood = int(rng.integers(n_classes))
        speakers = ["A", "B"] if rng.random() < 0.5 else ["B", "A"]
        for t in range(int(n)):
            label = mood if context_only else int(rng.integers(n_classes))
            rows["utterance_id"].append(f"d{d}_u{t}")
            rows["dialogue_id"].append(f"d{d}")
            rows["turn"].append(t)
            rows["speaker"].append(f"spk{speakers[t % 2]}")
            rows["label"].append("xxx" if rng.random() < unknown_label_rate else labels[label])
            rows["split"].append(split)
            rows["text"].append(f"utterance {t} of dialogue {d}")
            y.append(label)
            cue.append(mood if (context_only and t == 0) else (-1 if context_only else label))
    n_utt = len(y)
    cue_arr = np.asarray(cue)

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    str_dt = h5py.string_dtype()
    with h5py.File(path, "w") as f:
        f.attrs["schema_version"] = 1
        f.attrs["dataset"] = "synthetic"
        f.attrs["manifest_hash"] = f"synthetic-{seed}-{n_utt}"
        f.attrs["labels"] = json.dumps(labels)
        g = f.create_group("utterances")
        for col, vals in rows.items():
            if col == "turn":
                g.create_dataset(col, data=np.asarray(vals, dtype=np.int64))
            else:
                g.create_dataset(col, data=np.asarray(vals, dtype=object), dtype=str_dt)
        for m, dim in dims.items():
            enc = encoders.get(m, f"syn-{m}")
            protos = rng.normal(size=(n_classes, dim)).astype(np.float32) * 2.0
            pooled = rng.normal(size=(n_utt, dim)).astype(np.float32) * noise
            has_cue = cue_arr >= 0
            pooled[has_cue] += protos[cue_arr[has_cue]]
            present = rng.random(n_utt) >= missing_rate
            pooled[~present] = 0.0
            grp = f.create_group(f"features/{m}/{enc}")
            grp.create_dataset("pooled", data=pooled)
            grp.create_dataset("present", data=present)
            grp.create_dataset("status", data=np.asarray(["ok" if p else "missing: synthetic" for p in present], dtype=object), dtype=str_dt)
            grp.attrs.update({"encoder": enc, "modality": m, "dim": dim, "config": json.dumps({"name": enc, "seed": seed}), "config_hash": f"h{seed}{dim}"})
            if m in frames:
                fdim = frames[m]
                t_lens = rng.integers(2, 7, size=n_utt)
                offsets = np.concatenate([[0], np.cumsum(t_lens)]).astype(np.int64)
                fr = rng.normal(size=(int(offsets[-1]), fdim)).astype(np.float32) * noise
                fr += np.repeat(pooled[:, :1], t_lens, axis=0)  # weak tie to the pooled vector
                grp.create_dataset("frames", data=fr)
                grp.create_dataset("offsets", data=offsets)
                grp.attrs["frame_dim"] = fdim
    return path


# ---- a stand-in head for tests that must not depend on the real heads -------------------------
from dataclasses import dataclass as _dataclass  # noqa: E402
from typing import Any, ClassVar  # noqa: E402

import torch  # noqa: E402
from torch import nn  # noqa: E402

from erc.heads.base import DialogueBatch, Head, HeadInputs, HeadOutput  # noqa: E402


@_dataclass
class TinyConfig:
    hidden: int = 16
    use_frames: bool = False


class TinyHead(Head):
    """Concatenated pooled vectors -> a small MLP, per utterance; optionally adds mean frames."""

    Config: ClassVar[type] = TinyConfig
    variants: ClassVar[dict[str, dict[str, Any]]] = {"full": {}, "small": {"hidden": 4}, "frames": {"use_frames": True}}

    def __init__(self, config: TinyConfig, inputs: HeadInputs) -> None:
        super().__init__(config, inputs)
        self.mods = sorted(inputs.pooled_dims)
        d = sum(inputs.pooled_dims.values()) + (sum(inputs.frame_dims.values()) if config.use_frames else 0)
        self.net = nn.Sequential(nn.Linear(d, config.hidden), nn.ReLU(), nn.Linear(config.hidden, inputs.n_classes))

    @classmethod
    def frames_for(cls, config: TinyConfig, modalities: list[str]) -> list[str]:
        return [m for m in modalities if m == "audio"] if config.use_frames else []

    def forward(self, batch: DialogueBatch) -> HeadOutput:
        """pooled[m] ``[B, L, D_m]`` -> logits ``[B, L, C]``."""
        parts = [batch.pooled[m] for m in self.mods]
        for m, fr in batch.frames.items():  # fr [B, L, T, F], frame_mask [B, L, T]
            fm = batch.frame_mask[m].unsqueeze(-1).float()
            parts.append((fr * fm).sum(2) / fm.sum(2).clamp(min=1))
        logits = self.net(torch.cat(parts, -1))
        return HeadOutput(logits=logits, aux_loss=logits.new_zeros(()), parts={"zero": 0.0})
