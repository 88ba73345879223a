"""``erc extract``: dataset -> encoders -> HDF5 feature cache."""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape

from erc.config import parse_assignments
from erc.errors import UserError

SCOPES = ("dataset", "text", "audio", "video")


def split_settings(items: list[str] | None) -> dict[str, dict[str, str]]:
    """``["text.pooling=cls", "dataset.classes=4"]`` -> ``{"text": {"pooling": "cls"}, ...}``."""
    out: dict[str, dict[str, str]] = {s: {} for s in SCOPES}
    for key, value in parse_assignments(items).items():
        scope, _, name = key.partition(".")
        if scope not in SCOPES or not name:
            raise UserError(f"--set keys look like <{'|'.join(SCOPES)}>.<field>=value; got {key!r}")
        out[scope][name] = value
    return out


def extract(
    dataset: str = typer.Option("demo", help="iemocap | meld | manifest | demo (see `erc list datasets`)"),
    root: Optional[str] = typer.Option(None, help="Dataset folder (or manifest file). demo: where to write it."),
    text: str = typer.Option("minilm", help="Text encoder name, HF model id or path, or none."),
    audio: str = typer.Option("mel", help="Audio encoder name, HF model id or path, or none."),
    video: str = typer.Option("faces", help="Video encoder name, or none."),
    set_: Optional[list[str]] = typer.Option(None, "--set", help="Options, e.g. text.pooling=cls, "
                                             "text.context=3, video.frames=15, dataset.classes=4. Repeatable."),
    out: Optional[Path] = typer.Option(None, help="Cache file (default features/<dataset>.h5)."),
    device: str = typer.Option("auto", help="auto | cpu | cuda (fp16 on cuda)."),
    workers: int = typer.Option(2, min=1, help="Threads decoding media ahead of the encoder."),
    force: bool = typer.Option(False, help="Re-extract groups that are already up to date."),
    overwrite: bool = typer.Option(False, help="Replace a cache of another dataset at --out."),
    strict: bool = typer.Option(False, help="Refuse the dataset on any warning (empty texts, labels differing "
                                "in case, dialogues across splits, segments outside their media ...)."),
    allow_missing_media: bool = typer.Option(False, help="Extract even when a modality's media are missing for "
                                             "more than half of the utterances (they are recorded as missing)."),
    quiet: bool = typer.Option(False, help="No progress bar."),
    shard: Optional[str] = typer.Option(None, help="K/N: extract part K of N (e.g. a SLURM array task) into a "
                                        "partial cache (default features/<dataset>.shardKofN.h5); join the "
                                        "parts with `erc cache merge`."),
) -> None:
    """Run the encoders over a dataset once and cache per-utterance features in one HDF5 file."""
    from erc.extract.datasets import DATASETS, load_dataset
    from erc.extract.finetuned import build_encoders
    from erc.extract.preflight import preflight
    from erc.device import resolve_device
    from erc.extract.run import RunConfig
    from erc.extract.summary import print_summary, run_with_progress
    from erc.features.members import real_root
    from erc.features.schema import default_cache_path
    from erc.train.outputs import refuse_inputs

    console = Console(stderr=True)
    if dataset not in DATASETS:
        raise UserError(f"unknown dataset {dataset!r}; choose one of: {', '.join(DATASETS)}")
    resolve_device(device)  # an unknown or absent device is one line before any work
    settings = split_settings(set_)
    encoders = [e for m, name in (("text", text), ("audio", audio), ("video", video))
                for e in build_encoders(m, name, settings[m])]  # a per-fold fine-tuned folder: one a fold
    if not encoders:
        raise UserError("nothing to extract: --text, --audio and --video are all none")
    corpus = load_dataset(dataset, root, settings["dataset"])
    part = parse_shard(shard)
    read = {e.modality: float(getattr(e.config, "max_seconds", 0) or 0) for e in encoders}
    warnings = preflight(corpus, [e.modality for e in encoders], strict, allow_missing_media, max_seconds=read)
    for enc in encoders:  # weights there, settings the model can take: before any file is written
        enc.check()
    out = real_root(out or shard_cache_path(default_cache_path(dataset), part))  # a symlink: its target
    if root is not None:
        refuse_inputs(out, [Path(root)], "--out")  # e.g. --out my_corpus.csv: the manifest would be overwritten
    command = "erc extract " + shlex.join(_canonical_args(dataset, root, text, audio, video, set_, out))
    leader = os.environ.get("RANK", "0") == "0"  # under torchrun only rank 0 speaks
    if leader:
        for warning in warnings:
            console.print(f"[yellow]warning[/]: {escape(warning)}", highlight=False, soft_wrap=True)
        console.print(f"[bold]{corpus.name}[/]: {len(corpus.utterances)} utterances in "
                      f"{len(corpus.dialogues())} dialogues -> {out}" + (f" (part {shard})" if part else ""))
    cfg = RunConfig(device=device, workers=workers, force=force, overwrite=overwrite, shard=part)
    try:
        summaries = run_with_progress(corpus, encoders, out, cfg, command, console, quiet=quiet or not leader)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]: finished batches are saved; re-run the same command to resume")
        raise typer.Exit(130) from None
    if leader:
        print_summary(summaries, out, console)
        if part:
            full = default_cache_path(dataset)
            files = (f"{full.parent}/{full.stem}.shard*of{part[1]}{full.suffix}" if out == shard_cache_path(full, part)
                     else f"<the {part[1]} part files>")
            console.print(f"part {shard} done; when all {part[1]} parts are, join them: erc cache merge {full} {files}",
                          soft_wrap=True)


def parse_shard(value: str | None) -> tuple[int, int] | None:
    """``"2/4"`` -> ``(2, 4)``; None stays None."""
    if value is None:
        return None
    k, sep, n = value.partition("/")
    if not sep or not k.strip().isdigit() or not n.strip().isdigit() or not 1 <= int(k) <= int(n):
        raise UserError(f"--shard takes K/N with 1 <= K <= N (e.g. 2/4); got {value!r}")
    return int(k), int(n)


def shard_cache_path(path: Path, part: tuple[int, int] | None) -> Path:
    """``features/meld.h5`` -> ``features/meld.shard2of4.h5`` for part (2, 4)."""
    return path if part is None else path.with_name(f"{path.stem}.shard{part[0]}of{part[1]}{path.suffix}")


def _canonical_args(dataset: str, root: str | None, text: str, audio: str, video: str,
                    set_: list[str] | None, out: Path) -> list[str]:
    args = ["--dataset", dataset]
    if root:
        args += ["--root", root]
    args += ["--text", text, "--audio", audio, "--video", video]
    for s in set_ or []:
        args += ["--set", s]
    return args + ["--out", str(out)]
