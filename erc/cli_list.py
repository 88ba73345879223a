"""``erc list``: the registries that feed the CLI's choices."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.table import Table


def encoders() -> None:
    """Registered encoders (text/audio names not listed are taken as Hugging Face ids or paths)."""
    from erc.extract.encoders import ENCODERS

    table = Table(title="encoders (--text / --audio / --video; 'none' skips a modality)")
    for col in ("name", "modality", "weights", "what"):
        table.add_column(col)
    for e in ENCODERS.values():
        table.add_row(e.name, e.modality, "needs local weights" if e.needs_weights else "none needed", e.summary)
    Console().print(table)
    print("Any other --text/--audio value is a Hugging Face model id or local path (hf-text / hf-audio).")


def datasets() -> None:
    """Registered dataset adapters."""
    from erc.extract.datasets import DATASETS

    table = Table(title="datasets (--dataset)")
    table.add_column("name")
    table.add_column("what")
    for d in DATASETS.values():
        table.add_row(d.name, d.summary)
    Console().print(table)


def heads() -> None:
    """Registered heads and their ablation variants."""
    from erc.heads import HEADS, get_head

    table = Table(title="heads (--model)")
    for col in ("name", "variants", "what"):
        table.add_column(col)
    for name in HEADS:
        cls = get_head(name)
        doc = (cls.__doc__ or sys.modules[cls.__module__].__doc__ or "").strip().splitlines()
        table.add_row(name, ", ".join(cls.variants), doc[0] if doc else "")
    Console().print(table)
