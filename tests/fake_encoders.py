"""A deterministic stand-in encoder for testing the extraction loop without model weights."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from erc.errors import MediaError, MediaMissing
from erc.corpus import Corpus, Utterance
from erc.extract.encoders.base import Encoded, Encoder, EncoderConfig


@dataclass
class FakeConfig(EncoderConfig):
    name: str = "fake"
    batch_size: int = 4
    dim: int = 8
    delay: float = 0.0


class FakeAudioEncoder(Encoder):
    """Audio-like: reads the file named by ``utt.audio`` (its bytes seed the features); a file
    holding ``corrupt`` is a decode failure, a missing path is missing media."""

    modality = "audio"
    Config = FakeConfig

    def load(self, device: str, fp16: bool = False) -> None:
        self.loaded = True

    def sort_key(self, utt: Utterance) -> float:
        return len(utt.text)

    def prepare(self, dialogue: Sequence[Utterance], position: int) -> Any:
        utt = dialogue[position]
        if not utt.audio or not Path(utt.audio).exists():
            raise MediaMissing(f"file not found: {utt.audio}")
        data = Path(utt.audio).read_bytes()
        if data.startswith(b"corrupt"):
            raise MediaError(f"cannot decode {utt.audio}: bad header")
        return data

    def encode(self, items: list[Any]) -> list[Encoded]:
        if self.config.delay:
            time.sleep(self.config.delay)
        out = []
        for data in items:
            rng = np.random.default_rng(len(data) + data[0])
            t = 1 + len(data) % 5
            frames = rng.standard_normal((t, self.config.dim)).astype(np.float32)
            out.append(Encoded(pooled=frames.mean(0), frames=frames))
        return out

    @property
    def dim(self) -> int:
        return self.config.dim

    @property
    def frame_dim(self) -> int | None:
        return self.config.dim


def fake_corpus(tmp: Path, n_dialogues: int = 5, per_dialogue: int = 4, corrupt: int = 1,
                missing: int = 1) -> Corpus:
    """A corpus whose audio files are small byte blobs; ``corrupt`` / ``missing`` bad ones."""
    utts = []
    k = 0
    for d in range(n_dialogues):
        for t in range(per_dialogue):
            path = tmp / f"d{d}_u{t}.bin"
            if k < corrupt:
                path.write_bytes(b"corrupt data")
            elif k < corrupt + missing:
                pass
            else:
                path.write_bytes(bytes([d + 1, t + 1]) * (1 + (d * 7 + t) % 9))
            utts.append(Utterance(f"d{d}_u{t}", f"d{d}", t, "AB"[t % 2], "x" * (1 + (d + t) % 6),
                                  ["pos", "neg"][(d + t) % 2], ["train", "dev", "test"][d % 3], audio=str(path)))
            k += 1
    return Corpus("fake", ["pos", "neg"], utts, str(tmp))
