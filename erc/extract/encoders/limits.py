"""What a pretrained model can take, checked before any work: ``text.max_length`` against the
model's token positions (a longer setting is not a bigger window but an allocation that fails, or
a wrong result)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from erc.errors import UserError

NO_LIMIT = 10**6  # tokenizers without a limit announce a huge model_max_length (1e30)


def _sane(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and 0 < value < NO_LIMIT else None


def position_limit(positions: Any, tokenizer_max: Any) -> int | None:
    """The longest input in tokens: ``max_position_embeddings``, or the tokenizer's
    ``model_max_length`` when that is smaller (RoBERTa: 514 positions, 512 usable)."""
    limits = [x for x in (_sane(positions), _sane(tokenizer_max)) if x is not None]
    return min(limits) if limits else None


def folder_limit(folder: Path) -> int | None:
    """:func:`position_limit` from a model folder's ``config.json`` and ``tokenizer_config.json``
    (None when the folder does not say)."""
    def read(name: str) -> dict[str, Any]:
        try:
            data = json.loads((folder / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    return position_limit(read("config.json").get("max_position_embeddings"),
                          read("tokenizer_config.json").get("model_max_length"))


def check_max_length(max_length: int, limit: int | None, model: str, modality: str = "text") -> None:
    """UserError when ``max_length`` exceeds the model's ``limit`` of token positions."""
    if limit is not None and max_length > limit:
        raise UserError(f"--set {modality}.max_length={max_length} is more than {model} takes ({limit} token "
                        f"positions); use {modality}.max_length={limit} or less")
