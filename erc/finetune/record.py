"""``finetune.json``: what a fine-tuned folder was made from and whose labels it saw."""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
from pathlib import Path
from typing import Any

from erc.extract.encoders.hf import WEIGHT_FILES
from erc.extract.finetuned import FINETUNE_JSON
from erc.extract.provenance import library_versions
from erc.features.atomic import write_atomic

FORMAT = 1


def weights_sha256(folder: str | Path) -> str:
    """sha256 over the weight files of a ``save_pretrained`` folder (names sorted, each name then
    its bytes); "" when ``folder`` is not a local folder (e.g. weights still to download)."""
    root = Path(folder)
    if not root.is_dir():
        return ""
    files = sorted({p for pattern in WEIGHT_FILES for p in root.glob(pattern) if p.is_file()})
    h = hashlib.sha256()
    for p in files:
        h.update(p.name.encode() + b"\0")
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest() if files else ""


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def write_record(folder: Path, record: dict[str, Any]) -> None:
    """``folder/finetune.json``, written atomically (the marker of a finished fine-tuning)."""
    write_atomic(folder / FINETUNE_JSON, json.dumps({"format": FORMAT, **record, "library_versions": library_versions(),
                                                     "created": now()}, indent=1, default=str) + "\n")
