"""The interface between the dialogue data (:mod:`erc.features.dialogues`) and every head.

A batch holds B dialogues padded to L utterances. Per modality it carries the pooled vectors
and, when a head asks for them, the frame sequences padded to T frames.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn


@dataclass
class DialogueBatch:
    """A batch of dialogues.

    mask:      ``[B, L]`` bool, True for real utterances (False = padding).
    labels:    ``[B, L]`` long, class index; -100 at padding (ignored by the loss).
    speakers:  ``[B, L]`` long, speaker index inside its dialogue (0, 1, ... by first appearance).
    pooled:    modality -> ``[B, L, D_m]`` float; zeros where absent.
    present:   modality -> ``[B, L]`` bool, the modality exists for that utterance.
    frames:    modality -> ``[B, L, T_m, F_m]`` float (only modalities a head asked frames for).
    frame_mask: modality -> ``[B, L, T_m]`` bool, True for real frames.
    index:     ``[B, L]`` long, row of the utterance in the cache (-1 at padding).
    """

    mask: torch.Tensor
    labels: torch.Tensor
    speakers: torch.Tensor
    pooled: dict[str, torch.Tensor]
    present: dict[str, torch.Tensor]
    frames: dict[str, torch.Tensor] = field(default_factory=dict)
    frame_mask: dict[str, torch.Tensor] = field(default_factory=dict)
    index: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> DialogueBatch:
        def mv(d: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            return {k: v.to(device, non_blocking=True) for k, v in d.items()}

        return DialogueBatch(
            mask=self.mask.to(device), labels=self.labels.to(device), speakers=self.speakers.to(device),
            pooled=mv(self.pooled), present=mv(self.present), frames=mv(self.frames),
            frame_mask=mv(self.frame_mask), index=None if self.index is None else self.index.to(device),
        )


@dataclass
class HeadInputs:
    """What a head is built from: sizes read from the cache, never hand-written.

    pooled_dims: modality -> D_m of the pooled vectors (only the modalities in use).
    frame_dims:  modality -> F_m of the frames (only for modalities whose frames the head uses).
    n_classes:   number of labels.
    frame_tokens: modality -> K where K consecutive frame rows make one step (a video frame's
                 patch tokens, frame-major: an utterance's frames are ``[T * K, F_m]``); absent = 1.
    """

    pooled_dims: dict[str, int]
    frame_dims: dict[str, int]
    n_classes: int
    frame_tokens: dict[str, int] = field(default_factory=dict)


@dataclass
class HeadOutput:
    """logits: ``[B, L, C]``; aux_loss: scalar added to the cross-entropy (0 when none);
    parts: named scalar losses for logging (e.g. {"mec": ...})."""

    logits: torch.Tensor
    aux_loss: torch.Tensor
    parts: dict[str, float] = field(default_factory=dict)


class Head(nn.Module):
    """Base class of every head.

    Subclasses define ``Config`` (a dataclass), ``variants`` (ablation name -> config overrides),
    ``train_defaults`` (their paper's training settings: keys of ``erc.train.config.TrainConfig``,
    which refuses any other) and ``forward``. ``frames_for(config, modalities)`` says which modalities' frames to load.
    ``resolved`` (what the head resolved when built, e.g. which pre-trained weights it loaded) and
    ``warnings`` (what it could not do as configured) are recorded in a run's ``config.json`` and
    ``metrics.json``; the warnings are also printed.
    """

    Config: ClassVar[type]
    variants: ClassVar[dict[str, dict[str, Any]]] = {"full": {}}
    train_defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, config: Any, inputs: HeadInputs) -> None:
        super().__init__()
        self.config = config
        self.inputs = inputs
        self.resolved: dict[str, Any] = {}
        self.warnings: list[str] = []

    @classmethod
    def frames_for(cls, config: Any, modalities: list[str]) -> list[str]:
        """Modalities whose frame sequences this head needs (default: none)."""
        return []

    def forward(self, batch: DialogueBatch) -> HeadOutput:  # pragma: no cover - abstract
        raise NotImplementedError

    def after_step(self) -> None:
        """Called after each optimiser step (e.g. momentum-encoder update)."""

    def representation_module(self) -> nn.Module:
        """The submodule whose input is this head's utterance representation (what
        ``erc predict --with-embeddings`` writes): ``[B, L, E]`` over the batch, or ``[N, E]`` over
        its real utterances; when it runs several times in one forward (one call per side), the
        inputs are concatenated along E. Read by a forward pre-hook at prediction time, so the
        head's outputs never change. Default: the input of ``self.classifier``."""
        module = getattr(self, "classifier", None)
        if not isinstance(module, nn.Module) or isinstance(module, (nn.ModuleDict, nn.ModuleList)):
            raise NotImplementedError(f"{type(self).__name__} does not say which module's input is its representation")
        return module
