"""``erc cache info``, ``erc cache verify`` and ``erc cache merge``."""

from __future__ import annotations

import collections
import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table


def info(path: Path = typer.Argument(..., help="A feature cache (.h5).")) -> None:
    """Provenance, counts per split and label, dims and missing rate per encoder."""
    from erc.extract.finetuned import describe_record
    from erc.features.reader import FeatureCache

    console = Console()
    with FeatureCache(path, allow_partial=True) as cache:
        attrs = cache.attrs
        if cache.shard:
            console.print(f"[yellow]part {cache.shard} of a sharded extraction[/]: its groups hold only this part's rows")
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
        for path, why in sorted(cache.broken.items()):
            console.print(f"[red]{path.removeprefix('features/')}[/]: cannot be read: {why}")
        for g in cache.groups():
            prov = g.attrs.get("provenance")
            if prov:
                console.print(f"{g.modality}/{g.encoder} provenance: {prov}")
            if g.attrs.get("finetune"):
                console.print(f"  fine-tuned: {describe_record(g.attrs['finetune'])}", highlight=False)
            libs = g.attrs.get("library_versions")
            if libs:
                console.print(f"  libraries: {', '.join(f'{k} {v}' for k, v in json.loads(libs).items())}")


def verify(path: Path = typer.Argument(..., help="A feature cache (.h5).")) -> None:
    """Read every byte against its checksum; check counts, shapes, offsets and NaN/Inf. Exit 1
    when anything is wrong, naming the first damaged rows of each dataset."""
    from erc.features.reader import FeatureCache
    from erc.features.verify import unchecksummed, unrecorded, verify_cache

    with FeatureCache(path, allow_partial=True) as cache:
        problems = verify_cache(cache)
        groups = len(cache.group_paths())
        n = len(cache)
        bare = [] if problems else unchecksummed(cache)
        loose = [] if problems else unrecorded(cache)
        part = f"part {cache.shard} of a sharded extraction, " if cache.shard else ""
    if problems:
        for p in problems:
            print(f"FAIL {p}")
        print(f"{path}: {len(problems)} problem(s)")
        raise typer.Exit(1)
    if bare:
        print(f"note: {len(bare)} datasets were written without checksums by an older erc (e.g. {bare[0]}); "
              "their bytes were read but cannot be checked (re-extract with --force to add checksums)")
    if loose:
        print(f"note: the root records no size or checksum of {len(loose)} of its files (an older erc; e.g. "
              f"{loose[0]}); the next extraction into this cache records them")
    print(f"{path}: OK ({part}{n} utterances, {groups} feature groups, every byte read)")


def merge(
    out: Path = typer.Argument(..., help="The cache to write (or to add the merged groups to)."),
    parts: list[Path] = typer.Argument(..., help="The partial caches of `erc extract --shard K/N`, all N of them."),
    overwrite: bool = typer.Option(False, help="Replace a cache of another dataset at OUT."),
) -> None:
    """Join the parts of a sharded extraction into one cache (same manifest and encoder configs,
    every row in exactly one part; the first problem is named otherwise)."""
    from erc.features.merge import merge_parts

    names = merge_parts(out, parts, overwrite=overwrite)
    print(f"{out}: merged {len(parts)} parts ({', '.join(names)})")
