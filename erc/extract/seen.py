"""Whose labels an encoder saw: the ``labels_seen`` entry of a ``finetune.json`` record (and of a
cross-fitted group's record), which the leak guard (:mod:`erc.train.leaks`) reads."""

from __future__ import annotations

import hashlib
from typing import Any, Sequence


def ids_sha256(ids: Sequence[str]) -> str:
    """sha256 of the ids, one a line, in the order given."""
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()


def labels_seen(train_ids: Sequence[str], dev_ids: Sequence[str]) -> dict[str, Any]:
    """The utterances whose labels the encoder saw: trained on (``train``) and used to pick the
    epoch (``dev``); the leak guard refuses to score either as test."""
    return {"train": list(train_ids), "dev": list(dev_ids), "train_sha256": ids_sha256(train_ids),
            "dev_sha256": ids_sha256(dev_ids)}
