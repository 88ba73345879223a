"""``erc cache info`` and ``erc cache verify``."""

from __future__ import annotations

import collections
import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table


def info(path: Path = typer.Argument(..., help="A feature cache (.h5).")) -> None:
    """Provenance, counts per split and label, dims and missing rate per encoder."""
    from erc.features.reader import FeatureCache

    console = Console()
    with FeatureCache(path) as cache:
        attrs = cache.attrs
        cols = cache.utterances()
        n = len(cache)
        n_dia = len(set(cols["dialogue_id"]))
        console.print(f"[bold]{path}[/]  dataset={attrs.get('dataset')}  schema={attrs.get('schema_version')}  "
                      f"manifest={attrs.get('manifest_hash')}")
        console.print(f"{n} utterances in {n_dia} dialogues; labels: {', '.join(cache.labels)}")
        counts = collections.Counter(zip(cols["split"], cols["label"]))
        splits = [s for s in ("train", "dev", "test") if any(k[0] == s for k in counts)]
        table = Table(title="utterances per split and label")
        table.add_column("label")
        for s in splits:
            table.add_column(s, justify="right")
        for lab in cache.labels:
            table.add_row(lab, *(str(counts.get((s, lab), 0)) for s in splits))
        table.add_row("[bold]total", *(str(sum(v for k, v in counts.items() if k[0] == s)) for s in splits))
        console.print(table)
        groups = Table(title="feature groups")
        for col in ("modality", "encoder", "dim", "frames", "present", "missing", "failed", "created", "command"):
            groups.add_column(col)
        for g in cache.groups():
            status = cache.status(g.modality, g.encoder)
            missing = sum(s.startswith("missing") for s in status)
            failed = sum(s.startswith("failed") for s in status)
            frames = f"{g.frame_dim}-d" if g.frame_dim else "-"
            groups.add_row(g.modality, g.encoder, str(g.dim), frames, f"{g.n_present}/{g.n}",
                           f"{missing} ({missing / max(g.n, 1):.1%})", f"{failed} ({failed / max(g.n, 1):.1%})",
                           str(g.attrs.get("created", "")), str(g.attrs.get("command", "")))
        console.print(groups)
        for g in cache.groups():
            prov = g.attrs.get("provenance")
            if prov:
                console.print(f"{g.modality}/{g.encoder} provenance: {prov}")
            libs = g.attrs.get("library_versions")
            if libs:
                console.print(f"  libraries: {', '.join(f'{k} {v}' for k, v in json.loads(libs).items())}")


def verify(path: Path = typer.Argument(..., help="A feature cache (.h5).")) -> None:
    """Check counts, shapes, offsets and NaN/Inf; exit 1 when anything is wrong."""
    from erc.features.reader import FeatureCache
    from erc.features.verify import verify_cache

    with FeatureCache(path) as cache:
        problems = verify_cache(cache)
        groups = len(cache.groups())
        n = len(cache)
    if problems:
        for p in problems:
            print(f"FAIL {p}")
        print(f"{path}: {len(problems)} problem(s)")
        raise typer.Exit(1)
    print(f"{path}: OK ({n} utterances, {groups} feature groups)")
