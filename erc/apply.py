"""Apply a trained run to conversations it has not seen: extract them with the run's own encoders
(stage 1), then predict with its head (stage 2). The one module that joins the two stages."""

from __future__ import annotations

from pathlib import Path

from erc.extract.datasets import load_dataset
from erc.extract.encoders import encoder_from_attrs
from erc.extract.run import RunConfig, extract
from erc.train.runs import load_run, read_json


def extract_for_run(run_dir: str | Path, dataset: str, root: str | None, options: dict[str, str],
                    cache_path: str | Path, device: str = "auto") -> Path:
    """Extract a dataset's conversations with the encoders (same classes and configs) recorded in
    the run's provenance, into ``cache_path``. The corpus takes the run's label list, so labels the
    run does not know (or empty ones, for unlabelled conversations) are simply not scored."""
    run = load_run(run_dir)
    groups = read_json(Path(run_dir) / "provenance.json").get("groups", {})
    encoders = [encoder_from_attrs(modality, groups.get(modality, {}).get("attrs", {})) for modality in run.encoders]
    corpus = load_dataset(dataset, root, options)
    corpus.labels = list(run.labels)
    extract(corpus, encoders, Path(cache_path), RunConfig(device=device), f"erc predict --run {run_dir}")
    return Path(cache_path)
