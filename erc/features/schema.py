"""The HDF5 layout of a feature cache.

```
/                                   attrs: schema_version, dataset, manifest_hash, labels (JSON list)
/utterances/<column>                [N]   utterance_id, dialogue_id, turn, speaker, label, split, text
/features/<modality>/<encoder>/
    pooled                          [N, D]      float32, one vector per utterance (zeros if absent)
    frames                          [sum T, F]  ragged sequences in utterance order (optional)
    offsets                         [N + 1]     int64, frames of utterance i: frames[offsets[i]:offsets[i+1]]
    layers                          [N, L, D]   pooled vector of every hidden layer (optional)
    present                         [N]   bool, False where media was missing or failed
    status                          [N]   str, "ok" | "missing: why" | "failed: why"
    attrs: encoder, modality, dim, frame_dim, config (JSON), config_hash, provenance (JSON),
           library_versions (JSON), command, manifest_hash, created
```
Rows are in the corpus's utterance order (dialogues in order, turns in order).
"""

from __future__ import annotations

SCHEMA_VERSION = 1
UTTERANCE_COLUMNS = ("utterance_id", "dialogue_id", "turn", "speaker", "label", "split", "text")
STR_COLUMNS = ("utterance_id", "dialogue_id", "speaker", "label", "split", "text")


def group_path(modality: str, encoder: str) -> str:
    return f"features/{modality}/{encoder}"
