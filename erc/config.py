"""Config dataclasses: `key=value` overrides with type coercion, value checks, and stable hashing.

Every numeric field of a config is checked where it is declared: floats must be finite and ints
non-negative, and a field may declare tighter bounds with ``typing.Annotated``::

    @dataclass
    class GRUConfig(Checked):
        hidden: Positive = 128      # int >= 1
        dropout: Dropout = 0.3      # float in [0, 1)
        lr: PositiveFloat = 1e-4    # float > 0, finite

:func:`check_config` applies the rules; :func:`apply_overrides` runs it on every ``--set``, and
configs that derive from :class:`Checked` run it on construction (``__post_init__``). A bad value
is a :class:`BadValue` (a UserError): one line naming the field, the rule and the value.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Callable, TypeVar

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
    """Return a copy of dataclass ``cfg`` with ``overrides`` (strings) coerced to the field types
    and checked (:func:`check_config`).

    Unknown keys raise a UserError that lists the valid ones; a value outside its field's bounds
    raises a :class:`BadValue` naming ``what`` and the key.
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
    try:
        new = dataclasses.replace(cfg, **changes)  # type: ignore[type-var]
        check_config(new)
    except BadValue as e:
        raise BadValue(e.key, e.value, e.rule, f"{what} {e.key}") from None
    return new


# ---- value checks ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Range:
    """Bounds of a numeric field, declared with ``Annotated[int, Range(...)]``: ``low <= x`` (or
    ``low < x`` when ``low_open``) and ``x <= high`` (or ``x < high`` when ``high_open``)."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def rule(self) -> str:
        if self.low is not None and self.high is not None:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            return f"in {left}{_num(self.low)}, {_num(self.high)}{right}"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {_num(self.low)}"
        if self.high is not None:
            return f"{'<' if self.high_open else '<='} {_num(self.high)}"
        return "a number"

    def holds(self, x: float) -> bool:
        if self.low is not None and (x <= self.low if self.low_open else x < self.low):
            return False
        if self.high is not None and (x >= self.high if self.high_open else x > self.high):
            return False
        return True


@dataclass(frozen=True)
class OneOf:
    """The field's value must be one of ``values``: ``Annotated[int, OneOf(4, 6)]``."""

    values: tuple[Any, ...]

    def __init__(self, *values: Any) -> None:
        object.__setattr__(self, "values", values)

    def rule(self) -> str:
        return "one of " + ", ".join(map(str, self.values))

    def holds(self, x: Any) -> bool:
        return x in self.values


ANY_INT = Range()  # declare an int that may be negative: Annotated[int, ANY_INT]
Positive = Annotated[int, Range(1)]  # widths, sizes, counts of layers / frames / epochs
NonNegative = Annotated[int, Range(0)]  # the default of every int field, stated
PositiveFloat = Annotated[float, Range(0, low_open=True)]  # rates, temperatures, durations
NonNegativeFloat = Annotated[float, Range(0)]  # loss weights, decays
Dropout = Annotated[float, Range(0, 1, high_open=True)]  # a drop probability: 0 <= p < 1
Fraction = Annotated[float, Range(0, 1, low_open=True, high_open=True)]  # a share strictly inside (0, 1)
UnitInterval = Annotated[float, Range(0, 1)]  # e.g. an EMA momentum


class BadValue(UserError):
    """A config value outside its field's declared bounds."""

    def __init__(self, key: str, value: Any, rule: str, name: str | None = None) -> None:
        self.key, self.value, self.rule = key, value, rule
        super().__init__(f"{name or key} must be {rule}; got {value!r}")


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _constraints(annotation: Any) -> tuple[Any, list[Any]]:
    """(the bare type, the Range / OneOf checks) of a field annotation (Optional unwrapped)."""
    checks: list[Any] = []
    while True:
        origin = typing.get_origin(annotation)
        if origin is Annotated:
            checks += [m for m in annotation.__metadata__ if isinstance(m, (Range, OneOf))]
            annotation = annotation.__origin__
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(args) != 1:
                return annotation, checks
            annotation = args[0]
        else:
            return annotation, checks


def _check_value(key: str, value: Any, annotation: Any, name: Callable[[str], str]) -> None:
    if value is None:
        return
    bare, checks = _constraints(annotation)
    origin = typing.get_origin(bare)
    if origin is typing.Literal:
        options = typing.get_args(bare)
        if value not in options:
            raise BadValue(key, value, "one of " + ", ".join(map(str, options)), name(key))
        return
    if origin in (tuple, list) and isinstance(value, (tuple, list)):
        inner = (typing.get_args(bare) or (Any,))[0]
        for item in value:
            _check_value(key, item, inner, name)
        return
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if is_number and isinstance(value, float) and not math.isfinite(value):
        raise BadValue(key, value, "a finite number", name(key))
    if is_number and not checks and isinstance(value, int) and value < 0:
        checks = [Range(0)]  # ints are counts, sizes or indices unless declared otherwise
    for check in checks:
        if not check.holds(value):
            raise BadValue(key, value, check.rule(), name(key))


def check_config(cfg: Any, name: Callable[[str], str] = str) -> None:
    """Check every field of dataclass ``cfg`` (see the module docstring); a bad one raises a
    :class:`BadValue` whose message names the field as ``name(field)`` (e.g. a CLI flag)."""
    hints = typing.get_type_hints(type(cfg), include_extras=True)
    for f in dataclasses.fields(cfg):
        _check_value(f.name, getattr(cfg, f.name), hints.get(f.name, Any), name)


class Checked:
    """Mixin for config dataclasses: :func:`check_config` on construction (and so on
    ``dataclasses.replace``). A subclass with its own ``__post_init__`` calls ``super().__post_init__()``."""

    def __post_init__(self) -> None:
        check_config(self)


def to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-safe dict of a dataclass config."""
    return json.loads(json.dumps(dataclasses.asdict(cfg), default=str))


def config_hash(obj: Any) -> str:
    """A short stable hash of a JSON-serialisable object or dataclass."""
    if dataclasses.is_dataclass(obj):
        obj = to_dict(obj)
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]
