"""Provenance attributes written on every cache group."""

from __future__ import annotations

import datetime as _dt
import importlib.metadata as md
from typing import Any

from erc.corpus import Corpus
from erc.extract.encoders.base import Encoder

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


def group_attrs(encoder: Encoder, chash: str, corpus: Corpus, command: str) -> dict[str, Any]:
    tokens = {"frame_tokens": encoder.frame_tokens} if encoder.frame_tokens > 1 else {}  # only where frames hold tokens
    return {**tokens,
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
