"""Progress bar and the end-of-run summary table of an extraction."""

from __future__ import annotations

import collections
from pathlib import Path

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)
from rich.table import Table

from erc.corpus import Corpus
from erc.extract.encoders.base import Encoder
from erc.extract.run import GroupSummary, RunConfig, extract


def run_with_progress(corpus: Corpus, encoders: list[Encoder], out: Path, cfg: RunConfig, command: str,
                      console: Console, quiet: bool = False) -> list[GroupSummary]:
    """:func:`erc.extract.run.extract` with a rich progress bar (rate and ETA) per encoder."""
    if quiet:
        return extract(corpus, encoders, out, cfg, command)
    columns = (TextColumn("{task.description:<18}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False) as bar:
        tasks: dict[str, int] = {}

        def progress(desc: str, advance: int, total: int) -> None:
            if desc not in tasks:
                tasks[desc] = bar.add_task(desc, total=total, rate="")
                bar.update(tasks[desc], completed=advance)
                return
            task_id = tasks[desc]
            bar.advance(task_id, advance)
            task = bar.tasks[task_id]
            speed = task.speed
            bar.update(task_id, rate=f"{speed:6.1f} utt/s" if speed else "")

        return extract(corpus, encoders, out, cfg, command, progress)


def print_summary(summaries: list[GroupSummary], out: Path, console: Console) -> None:
    table = Table(title=f"extraction summary: {out}")
    for col in ("modality", "encoder", "utts", "ok", "missing", "failed", "state", "time"):
        table.add_column(col, justify="right" if col in ("utts", "ok", "missing", "failed", "time") else "left",
                         no_wrap=col in ("state", "encoder"))
    for s in summaries:
        table.add_row(s.modality, s.encoder, str(s.n), str(s.ok), str(s.missing), str(s.failed),
                      s.state + (f" ({s.resumed_batches} batches reused)" if s.resumed_batches else ""),
                      f"{s.seconds:.1f}s")
    console.print(table)
    for s in summaries:
        if not s.failures:
            continue
        reasons = collections.Counter(reason for _, reason in s.failures)
        console.print(f"[yellow]{s.modality}/{s.encoder}[/]: {len(s.failures)} utterances without features")
        for reason, count in reasons.most_common(5):
            example = next(uid for uid, r in s.failures if r == reason)
            console.print(f"  {count:>6} x {reason[:100]}  (e.g. {example})")
        if len(reasons) > 5:
            console.print(f"  ... and {len(reasons) - 5} other reasons (see `erc cache info {out}`)")
