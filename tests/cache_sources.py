"""In-memory row sources and tables for testing the cache writer without an encoder."""

from __future__ import annotations

import numpy as np

from erc.features.schema import UtteranceTable


def table(n: int, name: str = "t", seed: str = "h") -> UtteranceTable:
    """An utterance table of ``n`` rows in dialogues of 5 (``seed`` changes its manifest hash)."""
    return UtteranceTable(name, ["a", "b"], f"hash-{seed}-{n}", {
        "utterance_id": [f"u{i}" for i in range(n)], "dialogue_id": [f"d{i // 5}" for i in range(n)],
        "turn": [i % 5 for i in range(n)], "speaker": ["AB"[i % 2] for i in range(n)],
        "label": ["ab"[i % 2] for i in range(n)], "split": ["train"] * n, "text": [f"text {i}" for i in range(n)]})


class ArraySource:
    """A :class:`erc.features.groupfile.RowSource` over arrays held in memory."""

    def __init__(self, n: int, dim: int, frame_dim: int | None = None, frames_per_row: int = 0,
                 seed: int = 0, missing_every: int = 7) -> None:
        rng = np.random.default_rng(seed)
        self.n, self.dim, self.rows = n, dim, np.arange(n)
        self.present = np.arange(n) % missing_every != 0
        self.status = ["ok" if p else "missing: test" for p in self.present]
        self._pooled = rng.standard_normal((n, dim)).astype(np.float32) * self.present[:, None]
        self.layers_shape = None
        self.frame_dim, self.frame_dtype = frame_dim, "float16"
        self.frame_len = None
        if frame_dim is not None:
            self.frame_len = np.where(self.present, 1 + np.arange(n) % frames_per_row, 0).astype(np.int64)
            self.offsets = np.concatenate([[0], np.cumsum(self.frame_len)])
            self._frames = rng.standard_normal((int(self.offsets[-1]), frame_dim)).astype(np.float16)

    def pooled(self, a: int, b: int) -> np.ndarray:
        return self._pooled[a:b]

    def layers(self, a: int, b: int) -> np.ndarray:
        raise AssertionError("no layers")

    def frames(self, a: int, b: int) -> np.ndarray:
        return self._frames[self.offsets[a]: self.offsets[b]]
