"""Config dataclasses: `key=value` overrides with type coercion, and stable hashing."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from typing import Any, TypeVar

from erc.errors import UserError

T = TypeVar("T")


def parse_assignments(items: list[str] | None) -> dict[str, str]:
    """Turn ``["a=1", "b.c=x"]`` into ``{"a": "1", "b.c": "x"}``; a malformed item is a UserError."""
    out: dict[str, str] = {}
    for item in items or []:
        if "=" not in item:
            raise UserError(f"--set expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        key = key.strip()
        if not key:
            raise UserError(f"--set expects key=value, got {item!r}")
        out[key] = value.strip()
    return out


def _coerce(value: str, annotation: Any, key: str) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        non_none = [a for a in args if a is not type(None)]
        if value.lower() in ("none", "null", "") and len(non_none) < len(args):
            return None
        return _coerce(value, non_none[0], key)
    if origin is typing.Literal:
        if value not in args:
            raise UserError(f"{key} must be one of {', '.join(map(str, args))}; got {value!r}")
        return value
    if origin in (tuple, list):
        inner = args[0] if args else str
        parts = [p for p in value.split(",") if p.strip()]
        seq = [_coerce(p.strip(), inner, key) for p in parts]
        return tuple(seq) if origin is tuple else seq
    try:
        if annotation is bool:
            low = value.lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if annotation is int:
            return int(value)
        if annotation is float:
            return float(value)
    except ValueError:
        raise UserError(f"{key} expects a {annotation.__name__}, got {value!r}") from None
    return value


def apply_overrides(cfg: T, overrides: dict[str, str], *, what: str = "config") -> T:
    """Return a copy of dataclass ``cfg`` with ``overrides`` (strings) coerced to the field types.

    Unknown keys raise a UserError that lists the valid ones.
    """
    if not overrides:
        return cfg
    hints = typing.get_type_hints(type(cfg))
    names = {f.name for f in dataclasses.fields(cfg)}  # type: ignore[arg-type]
    changes: dict[str, Any] = {}
    for key, raw in overrides.items():
        if key not in names:
            raise UserError(f"unknown {what} key {key!r}; valid keys: {', '.join(sorted(names))}")
        changes[key] = _coerce(raw, hints[key], key)
    return dataclasses.replace(cfg, **changes)  # type: ignore[type-var]


def to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-safe dict of a dataclass config."""
    return json.loads(json.dumps(dataclasses.asdict(cfg), default=str))


def config_hash(obj: Any) -> str:
    """A short stable hash of a JSON-serialisable object or dataclass."""
    if dataclasses.is_dataclass(obj):
        obj = to_dict(obj)
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]
