"""Several runs of one configuration: seeds (``seed<k>/``) and k-fold CV (``fold<k>/``), over data
read from the cache once, aggregated as mean ± std into ``summary.json``. Finished runs are
skipped, so sweeps resume; a sweep holds its folder's lock while it runs (:mod:`erc.train.runs`)."""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from rich.progress import Progress

from erc.errors import UserError
from erc.heads.registry import HeadSpec
from erc.train.config import TrainConfig
from erc.train.dialogues import DialogueData
from erc.train.fits import check_fits
from erc.train.folds import LEAK_WARNING, FoldSpec, Grouping, check_grouping, session_of
from erc.train.leaks import check_fold_groups, fold_view
from erc.train.loop import RunResult, load_data, train_run
from erc.train.metrics import aggregate
from erc.train.parallel import RunTask, run_tasks
from erc.train.progress import progress_bar
from erc.train.runs import lock_run_dir, write_json


@dataclass
class SweepResult:
    """Runs of one configuration and their aggregate (``{"test": ..., "dev": ...}`` of
    :func:`erc.train.metrics.aggregate`)."""

    out_dir: Path
    runs: list[RunResult]
    summary: dict[str, Any]

    def test_values(self, key: str = "weighted_f1") -> list[float]:
        return [r.test[key] for r in self.runs if r.test]


def summarise_runs(out_dir: Path, runs: list[RunResult], extra: dict[str, Any]) -> SweepResult:
    """Aggregate ``runs`` and write ``out_dir/summary.json`` (``extra`` says what kind of sweep)."""
    summary = {**extra, "runs": [str(r.run_dir) for r in runs], "best_epochs": [r.best_epoch for r in runs],
               "test": aggregate([r.test for r in runs if r.test]), "dev": aggregate([r.dev for r in runs if r.dev])}
    write_json(out_dir / "summary.json", summary)
    return SweepResult(out_dir, runs, summary)


def _seeds_record(seeds: Sequence[int], variant: str) -> dict[str, Any]:
    """What ``summary.json`` says of a sweep over seeds."""
    return {"kind": "seeds", "seeds": list(seeds), "variant": variant}


def _folds_record(folds: int, grouping: Grouping, fold_seed: int, seed: int, variant: str) -> dict[str, Any]:
    """What ``summary.json`` says of one seed's k-fold CV (with the leak warning for pooled folds)."""
    extra = {"kind": "folds", "folds": folds, "grouping": grouping, "fold_seed": fold_seed, "seed": seed,
             "variant": variant}
    if grouping == "utterance":
        extra["warning"] = LEAK_WARNING
    return extra


def _bar(progress: Progress | None, cfg: TrainConfig) -> tuple[Progress, contextlib.AbstractContextManager]:
    """The progress display to use, and the context that shows it (a fresh one when none is given)."""
    if progress is not None:
        return progress, contextlib.nullcontext()
    bar = progress_bar(cfg.quiet)
    return bar, bar


def train_seeds(data: DialogueData, spec: HeadSpec, train_cfg: TrainConfig | None = None,
                out_dir: str | Path = "runs/run", seeds: Sequence[int] = (0, 1, 2, 3, 4),
                progress: Progress | None = None) -> SweepResult:
    """One run per seed under ``out_dir/seed<k>/`` (the dev set does not depend on the seed)."""
    base = train_cfg or TrainConfig()
    out = Path(out_dir)
    prog, shown = _bar(progress, base)
    with shown:
        runs = [train_run(data, spec, dataclasses.replace(base, seed=int(s)), out / f"seed{s}", prog) for s in seeds]
    return summarise_runs(out, runs, _seeds_record(seeds, spec.variant))


def cross_validate(data: DialogueData, spec: HeadSpec, train_cfg: TrainConfig | None = None,
                   out_dir: str | Path = "runs/run", folds: int = 10, grouping: Grouping = "dialogue",
                   fold_seed: int = 0, progress: Progress | None = None) -> SweepResult:
    """K-fold CV under ``out_dir/fold<k>/``: fold k is test, fold k+1 dev, the rest train.

    ``grouping="utterance"`` is DeepMSI-MER's pooled protocol (leaks context; see
    :mod:`erc.train.folds`); the summary records the grouping and the warning. ``"session"`` is
    leave-one-session-out (``folds`` = the number of sessions; fold k tests on the k-th session).
    """
    base = train_cfg or TrainConfig()
    out = Path(out_dir)
    prog, shown = _bar(progress, base)
    with shown:
        runs = [train_run(fold_view(data, FoldSpec(folds, k, grouping, fold_seed), base.max_frames), spec, base,
                          out / f"fold{k}", prog)
                for k in range(folds)]
    return summarise_runs(out, runs, _folds_record(folds, grouping, fold_seed, base.seed, spec.variant))


def _try_build(spec: HeadSpec, data: DialogueData) -> None:
    """Build the head once before any run folder exists, so that ``--set`` values the layers refuse
    together (e.g. a width not divisible by the heads) are one line and leave nothing behind."""
    if spec.overrides:
        check_fits(spec, data.inputs())  # e.g. hidden=1000000000: refused before any allocation
        spec.build(data.inputs())


@dataclass
class SweepPlan:
    """The runs of one configuration before they run: the data read (once) in this process, the
    tasks (seed, fold, folder) in order, and how their results are summarised."""

    spec: HeadSpec
    cfg: TrainConfig
    out: Path
    data: DialogueData
    seeds: int
    folds: int | None
    grouping: Grouping
    tasks: list[RunTask]

    def run_here(self, task: RunTask, progress: Progress | None) -> RunResult:
        """``task`` in this process, on the data already read (a fold: its splits of them)."""
        data = self.data if task.fold is None else fold_view(self.data, task.fold, task.cfg.max_frames)
        return train_run(data, self.spec, task.cfg, task.out, progress)

    def summarise(self, runs: list[RunResult]) -> SweepResult:
        """``summary.json`` of the sweep (and of each seed's folds), as :func:`train_seeds` and
        :func:`cross_validate` write them."""
        if self.folds is None:
            return summarise_runs(self.out, runs, _seeds_record(range(self.seeds), self.spec.variant))
        for s in range(self.seeds):
            summarise_runs(self.out / f"seed{s}", runs[s * self.folds:(s + 1) * self.folds],
                           _folds_record(self.folds, self.grouping, 0, s, self.spec.variant))
        return summarise_runs(self.out, runs, {"kind": "seeds x folds", "seeds": self.seeds, "folds": self.folds,
                                               "grouping": self.grouping})


def plan_sweep(cache: str | Path, spec: HeadSpec, modalities: Mapping[str, str | None] | Sequence[str],
               train_cfg: TrainConfig, out_dir: str | Path, seeds: int, folds: int | None = None,
               grouping: Grouping = "dialogue", data: DialogueData | None = None) -> SweepPlan:
    """Read the data of a sweep once and list its runs (see :func:`run_sweep`); a head the user's
    ``--set`` makes unbuildable or too large is refused here, before any run folder exists.
    ``data``: another plan's data for the same cache, modalities, frames, options and folds (an
    ablation's variants share one copy instead of reading the cache again)."""
    if seeds < 1:
        raise UserError("--seeds must be at least 1")
    out = Path(out_dir)
    check_grouping(grouping)
    if data is not None:
        if folds is None and grouping == "session":
            folds = len(set(session_of(data.dialogue_names).tolist()))
    elif folds is None and grouping == "session":
        data = load_data(cache, spec, modalities, train_cfg)
        folds = len(set(session_of(data.dialogue_names).tolist()))
        data = data.for_fold(FoldSpec(folds, 0, grouping))
    elif folds is None:
        data = load_data(cache, spec, modalities, train_cfg)
    else:
        data = load_data(cache, spec, modalities, train_cfg, folds=FoldSpec(folds, 0, grouping))
    if folds is not None:  # every fold against its own encoders' records, before any fold trains
        check_fold_groups(data, folds, grouping)
    _try_build(spec, data)
    if folds is None:
        tasks = [RunTask(spec, dataclasses.replace(train_cfg, seed=s), out / f"seed{s}") for s in range(seeds)]
    else:
        tasks = [RunTask(spec, dataclasses.replace(train_cfg, seed=s), out / f"seed{s}" / f"fold{k}",
                         FoldSpec(folds, k, grouping))
                 for s in range(seeds) for k in range(folds)]
    return SweepPlan(spec, train_cfg, out, data, seeds, folds, grouping, tasks)


def run_plans(cache: str | Path, modalities: Mapping[str, str | None] | Sequence[str], plans: Sequence[SweepPlan],
              jobs: int = 1, progress: Progress | None = None) -> list[SweepResult]:
    """Train every run of ``plans`` (``jobs`` > 1: together on worker processes, :mod:`erc.train.parallel`)
    while holding each sweep folder's lock, then summarise each plan."""
    mods = dict(modalities) if isinstance(modalities, Mapping) else dict.fromkeys(modalities)
    tasks = [t for p in plans for t in p.tasks]
    plan_of = {id(t): p for p in plans for t in p.tasks}
    prog, shown = _bar(progress, plans[0].cfg)
    with contextlib.ExitStack() as held, shown:
        for p in plans:  # a second sweep into one of these folders stops at once, naming this process
            held.enter_context(lock_run_dir(p.out))
        results = run_tasks(Path(cache), mods, tasks, jobs, prog, in_process=lambda t: plan_of[id(t)].run_here(t, prog))
    out, start = [], 0
    for p in plans:
        out.append(p.summarise(results[start:start + len(p.tasks)]))
        start += len(p.tasks)
    return out


def run_sweep(cache: str | Path, spec: HeadSpec, modalities: Mapping[str, str | None] | Sequence[str],
              train_cfg: TrainConfig, out_dir: str | Path, seeds: int, folds: int | None = None,
              grouping: Grouping = "dialogue", progress: Progress | None = None, jobs: int = 1) -> SweepResult:
    """``seeds`` seeds of one configuration, on the cache's splits or (``folds``) on k-fold CV per
    seed (``seed<s>/fold<k>/``). The cache is read once for all of them (once per worker with
    ``jobs`` > 1). With ``grouping="session"`` ``folds`` may be None: one fold per session found in
    the cache's dialogue ids."""
    plan = plan_sweep(cache, spec, modalities, train_cfg, out_dir, seeds, folds, grouping)
    return run_plans(cache, modalities, [plan], jobs, progress)[0]
