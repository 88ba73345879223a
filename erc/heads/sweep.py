"""Several runs of one configuration: seeds (``seed<k>/``) and k-fold CV (``fold<k>/``),
aggregated as mean ± std into ``summary.json``. Finished runs are skipped, so sweeps resume."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from erc.features.folds import LEAK_WARNING, FoldSpec, Grouping
from erc.heads.base import Head
from erc.heads.metrics import aggregate
from erc.heads.runs import write_json


@dataclass
class SweepResult:
    """Runs of one configuration and their aggregate (``{"test": ..., "dev": ...}`` of
    :func:`erc.heads.metrics.aggregate`)."""

    out_dir: Path
    runs: list[Any]  # list[RunResult]
    summary: dict[str, Any]

    def test_values(self, key: str = "weighted_f1") -> list[float]:
        return [r.test[key] for r in self.runs if r.test]


def _summarise(out_dir: Path, runs: list[Any], extra: dict[str, Any]) -> SweepResult:
    summary = {**extra, "runs": [str(r.run_dir) for r in runs], "best_epochs": [r.best_epoch for r in runs],
               "test": aggregate([r.test for r in runs if r.test]), "dev": aggregate([r.dev for r in runs if r.dev])}
    write_json(out_dir / "summary.json", summary)
    return SweepResult(out_dir, runs, summary)


def train_seeds(cache_path: str | Path, head_name: str | type[Head], modalities: Mapping[str, str | None] | Sequence[str],
                head_overrides: dict[str, str] | None = None, variant: str = "full", train_cfg: Any = None,
                out_dir: str | Path = "runs/run", seeds: Sequence[int] = (0, 1, 2, 3, 4), folds: FoldSpec | None = None,
                progress: Any = None) -> SweepResult:
    """One run per seed under ``out_dir/seed<k>/`` (the dev set does not depend on the seed)."""
    from erc.heads.train import TrainConfig, _progress, train_run

    base = train_cfg or TrainConfig()
    out = Path(out_dir)
    prog = progress or _progress(base.quiet)
    runs = []
    with prog if progress is None else _null():
        for s in seeds:
            cfg = dataclasses.replace(base, seed=int(s))
            runs.append(train_run(cache_path, head_name, modalities, head_overrides, variant, cfg, out / f"seed{s}", folds, prog))
    return _summarise(out, runs, {"kind": "seeds", "seeds": list(seeds), "variant": variant})


def cross_validate(cache_path: str | Path, head_name: str | type[Head], modalities: Mapping[str, str | None] | Sequence[str],
                   head_overrides: dict[str, str] | None = None, variant: str = "full", train_cfg: Any = None,
                   out_dir: str | Path = "runs/run", folds: int = 10, grouping: Grouping = "dialogue", fold_seed: int = 0,
                   progress: Any = None) -> SweepResult:
    """K-fold CV under ``out_dir/fold<k>/``: fold k is test, fold k+1 dev, the rest train.

    ``grouping="utterance"`` is DeepMSI-MER's pooled protocol (leaks context; see
    :mod:`erc.features.folds`); the summary records the grouping and the warning.
    """
    from erc.heads.train import TrainConfig, _progress, train_run

    base = train_cfg or TrainConfig()
    out = Path(out_dir)
    prog = progress or _progress(base.quiet)
    runs = []
    with prog if progress is None else _null():
        for k in range(folds):
            spec = FoldSpec(folds, k, grouping, fold_seed)
            runs.append(train_run(cache_path, head_name, modalities, head_overrides, variant, base, out / f"fold{k}", spec, prog))
    extra = {"kind": "folds", "folds": folds, "grouping": grouping, "fold_seed": fold_seed, "seed": base.seed, "variant": variant}
    if grouping == "utterance":
        extra["warning"] = LEAK_WARNING
    return _summarise(out, runs, extra)


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None
