"""Predict a cache's utterances with a trained run (``erc predict``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from erc.features.reader import FeatureCache
from erc.train.dialogues import DialogueData
from erc.train.runs import check_compatible, load_run


@torch.no_grad()
def predict_cache(run_dir: str | Path, cache_path: str | Path, out: str | Path | None = None, batch_size: int = 64) -> Path:
    """Write one CSV row per utterance (utterance_id, dialogue_id, split, label, pred, p_<class>...).

    Raises UserError when the cache's labels, encoders or dims differ from the run's.
    """
    run = load_run(run_dir)
    with FeatureCache(cache_path) as fc:
        check_compatible(run, fc)
        max_frames = run.config.get("train", {}).get("max_frames")
        data = DialogueData(fc, run.encoders, list(run.inputs.frame_dims), max_frames)
        name = fc.dataset or Path(cache_path).stem
    rows, probs = [], []
    for i in range(0, len(data), batch_size):
        batch = data.collate(list(range(i, min(i + batch_size, len(data)))))
        logits = run.head(batch).logits
        keep = batch.mask.reshape(-1)
        rows.append(batch.index.reshape(-1)[keep])
        probs.append(logits.softmax(-1).reshape(-1, logits.shape[-1])[keep])
    r, p = torch.cat(rows).numpy(), torch.cat(probs).numpy()
    df = pd.DataFrame({
        "utterance_id": [data.utterance_ids[k] for k in r],
        "dialogue_id": [data.dialogue_names[c] for c in data.dialogue_codes[r]],
        "split": data.split_of[r],
        "label": [data.label_names[k] for k in r],
        "pred": [data.labels[k] for k in p.argmax(1)],
    })
    for j, label in enumerate(data.labels):
        df[f"p_{label}"] = np.round(p[:, j], 6)
    path = Path(out) if out else Path(run_dir) / f"predictions-{name}.csv"
    df.to_csv(path, index=False)
    return path
