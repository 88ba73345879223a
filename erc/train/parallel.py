"""Several runs at once: the (variant, seed, fold) runs of a sweep or an ablation trained by a pool
of worker processes, each reading the cache once and training its runs one after another.

Every run stays what it is alone: its own seed, data order, early stopping, run folder, lock and
result (:func:`erc.train.loop.train_run`), so an interrupted pool resumes run by run and a run's
identity does not depend on how many ran beside it. Only the torch threads change (``jobs`` workers
share the cores; the thread count is not part of a run's identity), and with them the order of
floating-point sums inside an operation: a run trained in a pool can differ from the same run
trained alone in the last bits.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Mapping, Sequence

from rich.progress import Progress

from erc.errors import UserError
from erc.heads.registry import HeadSpec
from erc.train.config import TrainConfig
from erc.train.dialogues import DialogueData
from erc.train.folds import FoldSpec
from erc.train.leaks import fold_view
from erc.train.loop import RunResult, load_data, train_run


@dataclass(frozen=True)
class RunTask:
    """One run to train: the head, its options (seed included), its folder and its fold (None: the
    cache's splits; else the fold's splits of the data read with ``fold.n_folds`` folds)."""

    spec: HeadSpec
    cfg: TrainConfig
    out: Path
    fold: FoldSpec | None = None


def parse_jobs(value: str | int | None) -> int:
    """``--jobs``: a number of worker processes (1 = train in this process), or ``auto``: the
    machine's CUDA GPUs where there are several, else half its cores (at least 1)."""
    if value is None:
        return 1
    text = str(value).strip().lower()
    if text == "auto":
        import torch

        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        return gpus if gpus > 1 else max(1, (os.cpu_count() or 1) // 2)
    try:
        jobs = int(text)
    except ValueError:
        raise UserError(f"--jobs takes a number of processes or 'auto'; got {value!r}") from None
    if jobs < 1:
        raise UserError(f"--jobs must be at least 1; got {jobs}")
    return jobs


def worker_threads(jobs: int, given: int | None) -> int | None:
    """Torch threads per worker: ``given`` (``--threads``), else the cores shared out (at least 1);
    None (torch's own choice) when runs are trained in this process."""
    if given is not None or jobs <= 1:
        return given
    return max(1, (os.cpu_count() or 1) // jobs)


def spread_devices(device: str, n: int) -> list[str]:
    """The device of each of ``n`` runs: on a machine with several CUDA GPUs, ``auto`` / ``cuda``
    deal the runs out over them (``cuda:0``, ``cuda:1``, ...); any other device is kept for all.
    The device is not part of a run's identity."""
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if device in ("auto", "cuda") and gpus > 1:
        return [f"cuda:{i % gpus}" for i in range(n)]
    return [device] * n


# ---- in a worker process ----------------------------------------------------------------------
_DATA: dict[tuple, DialogueData] = {}  # read once per worker: key -> the data, for any fold of it


def _data_key(cache: Path, modalities: Mapping[str, str | None], task: RunTask) -> tuple:
    fold = None if task.fold is None else (task.fold.n_folds, task.fold.grouping, task.fold.seed)
    return (str(cache), tuple(modalities.items()), tuple(task.spec.frames_for(list(modalities))),
            task.cfg.max_frames, task.cfg.dev_fraction, fold)


def _run(cache: Path, modalities: Mapping[str, str | None], task: RunTask) -> RunResult:
    key = _data_key(cache, modalities, task)
    if key not in _DATA:
        base = None if task.fold is None else replace(task.fold, fold=0)
        _DATA[key] = load_data(cache, task.spec, modalities, task.cfg, base)
    data = _DATA[key] if task.fold is None else fold_view(_DATA[key], task.fold, task.cfg.max_frames)
    return train_run(data, task.spec, task.cfg, task.out)


# ---- in the parent --------------------------------------------------------------------------
def run_tasks(cache: Path, modalities: Mapping[str, str | None], tasks: Sequence[RunTask], jobs: int,
              progress: Progress | None, in_process: Callable[[RunTask], RunResult]) -> list[RunResult]:
    """Train ``tasks`` (results in the same order): in this process through ``in_process`` (on the
    data already read) when ``jobs`` is 1 (the progress bar shows each run's epochs), else on
    ``jobs`` spawned workers (the bar counts finished runs). The first error of a worker is raised
    here once the runs in progress have ended (finished runs are kept: a re-run resumes)."""
    if jobs <= 1 or len(tasks) <= 1:
        return [in_process(t) for t in tasks]
    bar = progress.add_task(f"{len(tasks)} runs on {min(jobs, len(tasks))} processes", total=len(tasks), info="") \
        if progress is not None else None
    results: list[RunResult | None] = [None] * len(tasks)
    ctx = multiprocessing.get_context("spawn")  # no fork of a process holding torch threads / HDF5 handles
    with concurrent.futures.ProcessPoolExecutor(max_workers=min(jobs, len(tasks)), mp_context=ctx) as pool:
        devices = spread_devices(tasks[0].cfg.device, len(tasks))
        futures = {pool.submit(_run, cache, dict(modalities), replace(t, cfg=replace(t.cfg, quiet=True, device=d))): i
                   for i, (t, d) in enumerate(zip(tasks, devices))}
        try:
            for fut in concurrent.futures.as_completed(futures):
                results[futures[fut]] = res = fut.result()
                if bar is not None:
                    test = f"test W-F1 {res.test['weighted_f1'] * 100:.2f}" if res.test else ""
                    progress.update(bar, advance=1, info=f"{res.run_dir} {test}{' (reused)' if res.skipped else ''}")
        except concurrent.futures.process.BrokenProcessPool:
            pool.shutdown(wait=True, cancel_futures=True)
            raise UserError(f"a worker process died (out of memory, or killed); the {sum(r is not None for r in results)} "
                            "finished runs are kept: re-run the same command to resume, with fewer --jobs if memory "
                            "ran out") from None
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    return [r for r in results if r is not None]
