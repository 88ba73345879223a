"""Provenance attributes written on every cache group."""

from __future__ import annotations

import datetime as _dt
import importlib.metadata as md
from typing import Any

from erc.config import config_hash
from erc.corpus import Corpus
from erc.extract.encoders.base import Encoder
from erc.extract.finetuned import record_of

LIBRARIES = ("erc", "torch", "transformers", "torchvision", "timm", "av", "soundfile",
             "opencv-python-headless", "numpy", "scipy", "h5py")


def library_versions() -> dict[str, str]:
    out = {}
    for name in LIBRARIES:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            continue
    return out


def group_config_hash(encoder: Encoder, frame_dtype: str) -> str:
    """What decides whether a stored group is current: the encoder's config and the frame dtype (and
    for a fine-tuned folder its weights' hash, so fine-tuning into the same folder again re-extracts)."""
    return config_hash({"encoder": encoder.config_dict(), "frame_dtype": frame_dtype, **finetune_attrs(encoder, True)})


def finetune_attrs(encoder: Encoder, weights_only: bool = False) -> dict[str, Any]:
    """``{"finetune": record}`` for an encoder fine-tuned by ``erc finetune`` (its ``finetune.json``:
    base model, whose labels it saw, dev curve), which the leak guard reads; {} for a frozen one.
    ``weights_only``: just the fine-tuned weights' hash."""
    record = record_of(encoder)
    if record is None:
        return {}
    return {"finetuned_weights": record.get("weights_sha256", "")} if weights_only else {"finetune": record}


def token_attrs(encoder: Encoder) -> dict[str, int]:
    """``frame_tokens`` where an encoder's frames hold K rows a step (patch tokens per video frame)."""
    return {"frame_tokens": encoder.frame_tokens} if encoder.frame_tokens > 1 else {}


def group_attrs(encoder: Encoder, chash: str, corpus: Corpus, command: str) -> dict[str, Any]:
    return {**token_attrs(encoder), **finetune_attrs(encoder),
        "encoder_class": type(encoder).__name__,
        "config": encoder.config_dict(),
        "config_hash": chash,
        "provenance": encoder.provenance(),
        "library_versions": library_versions(),
        "command": command,
        "dataset": corpus.name,
        "dataset_options": corpus.options,
        "manifest_hash": corpus.manifest_hash(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
