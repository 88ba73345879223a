"""An ablation: every listed variant of one head, over the same seeds and data, compared with the
reference variant (``full`` where it is listed) by paired intervals, and written as a table.

Each variant's runs live in ``<root>/<model>-<variant>-<tav>[-<hash>]/seed<k>/`` (the folder
``erc train-head`` gives that variant), so an interrupted ablation resumes run by run and a
``train-head`` run of a variant is reused. The table goes to ``<root>/<model>-ablation-<tav>.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from rich.progress import Progress

from erc.heads.registry import HeadSpec
from erc.train.config import TrainConfig
from erc.train.dialogues import DialogueData
from erc.train.folds import Grouping
from erc.train.intervals import Comparison, compare
from erc.train.report import ablation_table
from erc.train.runs import short_modalities
from erc.train.selection import DataChoice
from erc.train.sweep import SweepResult, plan_sweep, run_plans


@dataclass
class Ablation:
    """results: variant -> its sweep; reference: the variant the others are compared with;
    comparisons: variant -> paired Δ and intervals against the reference (None when no seed is
    shared); table: the markdown table, also written to ``path``."""

    results: dict[str, SweepResult]
    reference: str
    comparisons: dict[str, Comparison | None]
    table: str
    path: Path


def ablation_root(choice: DataChoice, out: Path | None = None) -> Path:
    """Where an ablation's variant folders go: ``out``, else ``runs/<dataset>``."""
    return out if out is not None else Path("runs") / choice.dataset


def run_ablation(choice: DataChoice, model: str, specs: Mapping[str, HeadSpec], cfg: TrainConfig, seeds: int,
                 root: Path, progress: Progress | None = None, jobs: int = 1, folds: int | None = None,
                 grouping: Grouping = "dialogue") -> Ablation:
    """Train ``seeds`` seeds of each variant in ``specs`` (variant -> resolved head) on ``choice``'s
    data under ``root`` (on the cache's splits, or on ``folds`` / ``grouping`` as
    :func:`~erc.train.sweep.run_sweep`; ``jobs`` > 1: every variant's runs together on worker
    processes), compare each with the reference (runs paired by seed and fold) and write the table."""
    plans = []
    shared: dict[tuple[str, ...], DialogueData] = {}  # one copy of the data per set of frames the variants read
    for spec in specs.values():
        frames = tuple(spec.frames_for(list(choice.modalities)))
        plans.append(plan_sweep(choice.cache, spec, choice.modalities, cfg, choice.run_dir(model, spec, root), seeds,
                                folds, grouping, data=shared.get(frames)))
        shared.setdefault(frames, plans[-1].data)
    results = dict(zip(specs, run_plans(choice.cache, choice.modalities, plans, jobs, progress)))
    ref = "full" if "full" in results else next(iter(results))
    runs = {v: {str(r.run_dir.relative_to(res.out_dir)): r.run_dir for r in res.runs} for v, res in results.items()}
    comparisons = {v: compare(runs[ref], runs[v]) for v in results if v != ref}
    table = ablation_table({v: r.test_values() for v, r in results.items()}, ref, comparisons)
    path = root / f"{model}-ablation-{short_modalities(choice.modalities)}.md"
    path.write_text(table + "\n")
    return Ablation(results, ref, comparisons, table, path)
