"""Train from a cache path in one call (what the CLI does through ``run_sweep``), for tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from erc.heads.registry import resolve_head
from erc.train.config import TrainConfig
from erc.train.loop import RunResult, load_data, train_run
from erc.train.sweep import SweepResult, cross_validate, train_seeds


def fit(cache: Path, head: Any, modalities: Any, overrides: dict | None = None, variant: str = "full",
        cfg: TrainConfig | None = None, out: Path | str = "runs/run") -> RunResult:
    """One run: resolve the head, read the cache, train."""
    spec = resolve_head(head, variant, overrides)
    cfg = cfg or TrainConfig()
    return train_run(load_data(cache, spec, modalities, cfg), spec, cfg, out)


def fit_seeds(cache: Path, head: Any, modalities: Any, overrides: dict | None, variant: str, cfg: TrainConfig,
              out: Path, seeds: Sequence[int]) -> SweepResult:
    spec = resolve_head(head, variant, overrides)
    return train_seeds(load_data(cache, spec, modalities, cfg), spec, cfg, out, seeds)


def fit_folds(cache: Path, head: Any, modalities: Any, overrides: dict | None, variant: str, cfg: TrainConfig,
              out: Path, folds: int) -> SweepResult:
    spec = resolve_head(head, variant, overrides)
    return cross_validate(load_data(cache, spec, modalities, cfg), spec, cfg, out, folds)
