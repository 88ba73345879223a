"""The progress bar of training runs and sweeps (one line per run: epochs, loss, dev W-F1)."""

from __future__ import annotations

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


def progress_bar(quiet: bool = False) -> Progress:
    """A rich progress display; ``quiet`` disables it. Tasks carry an ``info`` field."""
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                    TimeElapsedColumn(), disable=quiet, transient=False)
