"""Stage 2: light heads trained from the feature cache.

``HEADS`` maps a head's name to ``"module:Class"`` (imported lazily); :func:`build_head` builds
one from the cache's sizes, an ablation variant and the user's ``key=value`` overrides.
"""

from __future__ import annotations

import importlib
from typing import Any

from erc.config import apply_overrides
from erc.errors import UserError
from erc.heads.base import DialogueBatch, Head, HeadInputs, HeadOutput

HEADS: dict[str, str] = {
    "matav": "erc.heads.matav:MaTAV",
    "jfm": "erc.heads.jfm:JFM",
    "deepmsi": "erc.heads.deepmsi:DeepMSI",
    "mlp": "erc.heads.baselines:MLPHead",
    "gru": "erc.heads.baselines:GRUHead",
}

__all__ = ["HEADS", "DialogueBatch", "Head", "HeadInputs", "HeadOutput", "build_head", "get_head",
           "head_config"]


def get_head(name: str) -> type[Head]:
    """The head class registered as ``name``; a UserError listing the choices otherwise."""
    if name not in HEADS:
        raise UserError(f"unknown head {name!r}; choose one of: {', '.join(HEADS)}")
    module, cls = HEADS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def head_config(name: str, overrides: dict[str, Any] | None = None, variant: str = "full") -> Any:
    """The resolved config of head ``name``: defaults, then the variant's overrides, then the user's."""
    cls = get_head(name)
    if variant not in cls.variants:
        raise UserError(f"unknown variant {variant!r} of {name}; choose one of: {', '.join(cls.variants)}")
    cfg = cls.Config()
    cfg = apply_overrides(cfg, {k: str(v) for k, v in cls.variants[variant].items()}, what=f"{name} config")
    return apply_overrides(cfg, {k: str(v) for k, v in (overrides or {}).items()}, what=f"{name} config")


def build_head(name: str, inputs: HeadInputs, overrides: dict[str, Any] | None = None,
               variant: str = "full") -> Head:
    """Build head ``name`` for ``inputs`` with ``variant``'s config overrides, then ``overrides``
    (strings are coerced to the field types). Every ``nn.Dropout`` becomes a
    :class:`~erc.heads.dropout.FastDropout` (same p and scaling, a cheaper mask on CPU)."""
    from erc.heads.dropout import use_fast_dropout

    head = get_head(name)(head_config(name, overrides, variant), inputs)
    use_fast_dropout(head)
    return head
