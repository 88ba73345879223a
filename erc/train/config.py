"""How a head is trained: :class:`TrainConfig` (optimisation, selection, precision, device), its
merge with a head's ``train_defaults``, and the torch device it trains on."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from typing import Any, Literal

import torch

from erc.config import Fraction, NonNegative, NonNegativeFloat, Positive, PositiveFloat, check_config
from erc.device import check_device_name, resolve_device
from erc.errors import UserError
from erc.heads.base import Head

# fields that do not change a run's result: left out of its identity (erc.train.runs.run_identity)
NOT_HASHED = ("device", "num_threads", "quiet", "eval_batch_size", "overwrite")
# the command-line flag of each TrainConfig field, for error messages
FLAGS = {"epochs": "--epochs", "batch_size": "--batch-size", "lr": "--lr", "patience": "--patience",
         "num_threads": "--threads", "max_frames": "--max-frames", "device": "--device", "precision": "--precision"}


@dataclass
class TrainConfig:
    """Optimisation and selection settings (batch_size counts dialogues)."""

    epochs: Positive = 100
    batch_size: Positive = 16
    lr: PositiveFloat = 1e-4
    weight_decay: NonNegativeFloat = 1e-5
    patience: NonNegative = 20  # epochs without a better dev weighted F1 before stopping; 0 = never stop
    class_weights: bool = False  # inverse-frequency class weights in the cross-entropy
    grad_clip: NonNegativeFloat = 1.0  # max grad norm; 0 = off
    seed: NonNegative = 0
    deterministic: bool = False
    device: str = "auto"  # auto | cpu | cuda | cuda:N (erc.device)
    num_threads: Positive | None = None
    dev_fraction: Fraction = 0.1  # share of train dialogues carved into dev when the cache has no dev
    max_frames: Positive | None = None  # truncate frame sequences to this many frames
    eval_batch_size: Positive = 64
    precision: Literal["fp32", "bf16"] = "fp32"  # autocast of the training forward; evaluation stays fp32
    quiet: bool = False
    overwrite: bool = False  # replace a finished run of another configuration in the run folder

    def __post_init__(self) -> None:
        """Every value checked on construction (erc.config's rules; CLI flags named in errors)."""
        check_config(self, lambda key: FLAGS.get(key, f"train option {key}"))
        check_device_name(self.device)
        cores = os.cpu_count() or 1
        if self.num_threads is not None and self.num_threads > cores:
            raise UserError(f"--threads {self.num_threads} is more than this machine's {cores} cores")

    @classmethod
    def for_head(cls, head: type[Head], **given: Any) -> TrainConfig:
        """Options the user gave (None = not given) > the head's ``train_defaults`` (its paper's) >
        these defaults. A ``train_defaults`` key that is no field here is a bug in the head:
        ValueError naming it (``tests/test_train_config.py`` builds every registered head's)."""
        defaults = check_train_defaults(head)
        return cls(**{**defaults, **{k: v for k, v in given.items() if v is not None}})

    def torch_device(self) -> torch.device:
        """The device this config trains on (:func:`erc.device.resolve_device`; UserError when the
        machine does not have it)."""
        return torch.device(resolve_device(self.device))


def check_train_defaults(head: type[Head]) -> dict[str, Any]:
    """``head.train_defaults``, refused (ValueError) when it names a key :class:`TrainConfig` lacks."""
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(head.train_defaults) - known)
    if unknown:
        raise ValueError(f"{head.__name__}.train_defaults has unknown keys {unknown}; TrainConfig has {sorted(known)}")
    return dict(head.train_defaults)
