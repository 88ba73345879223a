"""The one registry of heads, feeding ``--model`` and ``erc list heads``, and :class:`HeadSpec`:
a head resolved once (class, ablation variant, the user's overrides, the typed config) and then
handed around instead of names and ``key=value`` strings.

``HEADS`` maps a head's name to ``"module:Class"`` (imported lazily). A head outside the registry
is named ``"module:Qualname"`` or given as its class.
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from erc.config import apply_overrides
from erc.errors import UserError
from erc.heads.base import Head, HeadInputs

HEADS: dict[str, str] = {
    "matav": "erc.heads.matav:MaTAV",
    "jfm": "erc.heads.jfm:JFM",
    "deepmsi": "erc.heads.deepmsi:DeepMSI",
    "mlp": "erc.heads.baselines:MLPHead",
    "gru": "erc.heads.baselines:GRUHead",
}


def get_head(name: str) -> type[Head]:
    """The head class registered as ``name``; a UserError listing the choices otherwise."""
    if name not in HEADS:
        raise UserError(f"unknown head {name!r}; choose one of: {', '.join(HEADS)}")
    return _import(HEADS[name])


def _import(target: str) -> Any:
    module, _, qual = target.partition(":")
    obj: Any = importlib.import_module(module)
    for part in qual.split("."):
        obj = getattr(obj, part)
    return obj


@dataclass(frozen=True)
class HeadSpec:
    """A head resolved for training or loading.

    name: the registry name, or ``module:Qualname`` for a head class outside the registry.
    variant: the ablation variant (a key of ``cls.variants``).
    overrides: the user's ``key=value`` settings as given (recorded in a run's ``config.json``).
    config: the typed config: the class defaults, then the variant's switches, then the overrides.
    """

    name: str
    cls: type[Head]
    variant: str
    config: Any
    overrides: dict[str, str] = field(default_factory=dict)

    def frames_for(self, modalities: list[str]) -> list[str]:
        """Modalities whose frame sequences this head needs among ``modalities``."""
        return self.cls.frames_for(self.config, modalities)

    def build(self, inputs: HeadInputs) -> Head:
        """The head for ``inputs``, every ``nn.Dropout`` replaced by
        :class:`~erc.heads.dropout.FastDropout` (same p and scaling, a cheaper mask on CPU)."""
        from erc.heads.dropout import use_fast_dropout

        try:
            head = self.cls(self.config, inputs)
        except (ValueError, AssertionError) as e:
            if not self.overrides:
                raise
            # a combination of the user's --set values the layers refuse (e.g. dim not divisible by heads)
            given = " ".join(f"{k}={v}" for k, v in self.overrides.items())
            raise UserError(f"{self.name} cannot be built with --set {given}: {e}") from None
        use_fast_dropout(head)
        return head


def resolve_head(head: str | type[Head], variant: str = "full", overrides: dict[str, Any] | None = None) -> HeadSpec:
    """Resolve a head by registry name, ``module:Qualname`` or class, with an ablation variant and
    ``key=value`` overrides (strings are coerced to the config's field types). Unknown heads,
    variants and keys raise a UserError naming the choices."""
    if isinstance(head, str):
        name, cls = (head, _import(head)) if ":" in head else (head, get_head(head))
    else:
        name, cls = f"{head.__module__}:{head.__qualname__}", head
    if variant not in cls.variants:
        raise UserError(f"unknown variant {variant!r} of {name}; choose one of: {', '.join(cls.variants)}")
    cfg = dataclasses.replace(cls.Config(), **cls.variants[variant])
    given = {k: str(v) for k, v in (overrides or {}).items()}
    cfg = apply_overrides(cfg, given, what=f"{name} config")
    return HeadSpec(name, cls, variant, cfg, given)


def check_variant_overrides(head: type[Head], variants: Sequence[str], overrides: Mapping[str, Any] | None) -> None:
    """UserError (one line) when a ``--set`` key is one that a listed ablation variant switches:
    the override is applied after the variant's switches, so it would silently turn the variant
    into another (``--set use_mec=true`` makes ``no-mec`` a second ``full``; ``use_mec=false``
    makes ``full`` a second ``no-mec``). Unknown variants are left to :func:`resolve_head`."""
    given = overrides or {}
    for variant in variants:
        switches = head.variants.get(variant, {})
        for key, value in given.items():
            if key in switches:
                raise UserError(f"--set {key}={value} collides with variant {variant!r}, which sets "
                                f"{key}={switches[key]!r}: drop --set {key} or leave {variant} out of --variants")


def build_head(name: str | type[Head], inputs: HeadInputs, overrides: dict[str, Any] | None = None,
               variant: str = "full") -> Head:
    """Shorthand: ``resolve_head(name, variant, overrides).build(inputs)``."""
    return resolve_head(name, variant, overrides).build(inputs)
