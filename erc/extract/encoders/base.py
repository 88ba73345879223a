"""The encoder interface every text / audio / video encoder implements.

The extraction loop (:mod:`erc.extract.run`) drives an encoder in three steps:

1. ``prepare(dialogue, position)`` on worker threads: CPU work for one utterance (decode media,
   build the text input). Raises :class:`~erc.errors.MediaMissing` when the utterance has no
   media, :class:`~erc.errors.MediaError` when it cannot be read.
2. ``encode(items)`` on the main thread: one batch through the model.
3. The loop writes each :class:`Encoded` to the cache.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

from erc.config import Checked, Positive
from erc.corpus import Utterance
from erc.features.schema import Encoded

__all__ = ["Encoded", "Encoder", "EncoderConfig"]


@dataclass
class EncoderConfig(Checked):
    """Fields every encoder config has. ``name`` is the cache group name
    (``/features/<modality>/<name>``); ``batch_size`` is utterances per forward pass. Every value is
    checked on construction (:class:`erc.config.Checked`: a bad ``--set`` is one line)."""

    name: str = ""
    batch_size: Positive = 16


class Encoder(ABC):
    """Base class. Subclasses set ``modality`` and take their config dataclass in ``__init__``."""

    modality: ClassVar[str]
    config: EncoderConfig

    def __init__(self, config: EncoderConfig) -> None:
        self.config = config
        self.device = "cpu"
        self.fp16 = False

    @property
    def name(self) -> str:
        return self.config.name

    def check(self) -> None:
        """Cheaply verify that weights exist; raise :class:`~erc.errors.WeightsMissing` if not."""

    @abstractmethod
    def load(self, device: str, fp16: bool = False) -> None:
        """Load weights onto ``device`` ("cpu" or "cuda"); fp16 only on CUDA."""

    def sort_key(self, utt: Utterance) -> float:
        """Length proxy used to build length-sorted batches (bigger = longer)."""
        return 0.0

    def ready(self, utterances: Sequence[Utterance]) -> None:
        """Called on the main thread before a batch of ``utterances`` is prepared: load what they
        need that :meth:`load` left out (an encoder of several models loads each on first use).
        Nothing by default."""

    def batch_group(self, utt: Utterance) -> int:
        """Which batches ``utt`` may share: the batch plan never puts two groups in one batch (an
        encoder whose utterances take different weights groups them by those weights). 0: any."""
        return 0

    @abstractmethod
    def prepare(self, dialogue: Sequence[Utterance], position: int) -> Any:
        """CPU-side input of ``dialogue[position]``; thread-safe."""

    @abstractmethod
    def encode(self, items: list[Any]) -> list[Encoded]:
        """Encode a batch of prepared items; one :class:`Encoded` per item, in order."""

    @property
    @abstractmethod
    def dim(self) -> int:
        """Size of the pooled vector (valid after ``load``)."""

    @property
    def frame_dim(self) -> int | None:
        """Size of a frame vector, or None when the encoder keeps no frames."""
        return None

    @property
    def frame_tokens(self) -> int:
        """Rows of ``frames`` that make one step (e.g. a video frame's K patch tokens); 1 by default."""
        return 1

    def provenance(self) -> dict[str, Any]:
        """Attributes written on the cache group: model id, revision, layers, pooling, rate..."""
        return {}

    def config_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self.config)
