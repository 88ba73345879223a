"""The options of ``erc finetune``."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any, Literal

from erc.config import (Checked, Fraction, NonNegative, NonNegativeFloat, Positive, PositiveFloat, UnitInterval,
                        check_config, config_hash)
from erc.errors import UserError

# fields that change how a run goes, not what it learns: left out of the config hash
NOT_HASHED = ("device", "quiet", "keep_checkpoints", "logging_steps", "eval_batch_size")
# fields added later, left out of the hash at their default so that folders fine-tuned before they
# existed keep their identity (and are not refused as "another configuration")
LATER = {"pooling": "cls"}
DEVICES = re.compile(r"auto|cpu|cuda(:\d+)?")


@dataclass
class FinetuneConfig(Checked):
    """Fine-tuning settings. ``batch_size`` counts utterances per device step; the optimiser steps
    every ``grad_accum`` of them. ``warmup_ratio``: share of the steps with a linearly rising
    learning rate, then linear decay to 0. ``class_weights``: inverse-frequency weights of the
    train labels in the cross-entropy. ``precision``: auto = bf16 on CPU and on CUDA where
    supported (else fp16). Text: ``context`` past (``context_future`` next) turns as
    "Speaker: text", cut from the oldest at ``max_length`` tokens (EmoBERTa's input; the same
    window ``erc extract`` then uses). Audio: ``max_seconds`` per utterance, the CNN front end
    frozen (``freeze_feature_encoder``). ``pooling`` (text): what the classifier reads, the first
    token (``cls``, transformers' sequence classifier) or the mean of the target turn's tokens
    (``target``, :mod:`erc.finetune.pooled`; extraction then pools the same way). ``dev_fraction`` / ``fold_seed``: as ``erc train-head``,
    so each fold's train / dev / test parts are the ones it scores."""

    epochs: Positive = 3
    lr: PositiveFloat = 2e-5
    batch_size: Positive = 16
    eval_batch_size: Positive = 32
    grad_accum: Positive = 1
    warmup_ratio: UnitInterval = 0.1
    weight_decay: NonNegativeFloat = 0.01
    class_weights: bool = True
    seed: NonNegative = 0
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    device: str = "auto"
    context: NonNegative = 64
    context_future: NonNegative = 0
    speaker_names: bool = True
    max_length: Positive = 256
    pooling: Literal["cls", "target"] = "cls"
    max_seconds: PositiveFloat = 15.0
    freeze_feature_encoder: bool = True
    dev_fraction: Fraction = 0.1
    fold_seed: NonNegative = 0
    save_total_limit: Positive = 2
    logging_steps: Positive = 10
    keep_checkpoints: bool = False
    quiet: bool = False

    def __post_init__(self) -> None:
        check_config(self, lambda key: f"--{key.replace('_', '-')}")
        if not DEVICES.fullmatch(str(self.device)):
            raise UserError(f"--device must be auto, cpu, cuda or cuda:N; got {self.device!r}")

    def hashed(self) -> dict[str, Any]:
        """The fields that decide what is learned."""
        return {k: v for k, v in asdict(self).items() if k not in NOT_HASHED and not (k in LATER and v == LATER[k])}

    def hash(self) -> str:
        return config_hash(self.hashed())
