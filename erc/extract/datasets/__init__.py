"""Dataset adapters, one registry: name -> loader(root, options) -> Corpus."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

from erc.errors import UserError
from erc.corpus import Corpus, Utterance

__all__ = ["Corpus", "Utterance", "DATASETS", "DatasetEntry", "load_dataset"]


@dataclass(frozen=True)
class DatasetEntry:
    """A registered dataset: ``target`` is ``module:function`` with signature
    ``(root: Path, options: dict[str, str]) -> Corpus``."""

    name: str
    summary: str
    target: str
    default_root: str | None = None

    def loader(self):
        module, func = self.target.split(":")
        return getattr(importlib.import_module(module), func)


DATASETS: dict[str, DatasetEntry] = {
    e.name: e
    for e in [
        DatasetEntry("iemocap", "IEMOCAP_full_release tree (Session1..5); 6 classes, or 4 with --set dataset.classes=4",
                     "erc.extract.datasets.iemocap:load_iemocap"),
        DatasetEntry("meld", "MELD: {train,dev,test}_sent_emo.csv plus clip folders (media optional)",
                     "erc.extract.datasets.meld:load_meld"),
        DatasetEntry("manifest", "any dataset as a CSV or JSONL manifest (--root is the file)",
                     "erc.extract.datasets.manifest:load_manifest"),
        DatasetEntry("demo", "built-in synthetic corpus (real wav/mp4 in the MELD layout), written on first use",
                     "erc.extract.datasets.demo:load_demo", default_root="data/demo"),
    ]
}


def load_dataset(name: str, root: str | Path | None, options: dict[str, str] | None = None) -> Corpus:
    """Read dataset ``name`` from ``root``. Unknown names, a missing root or a root of the wrong
    layout raise a UserError with one clear line."""
    if name not in DATASETS:
        raise UserError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    entry = DATASETS[name]
    if root is None:
        if entry.default_root is None:
            raise UserError(f"--dataset {name} needs --root (the dataset's folder or file)")
        root = entry.default_root
    corpus = entry.loader()(Path(root), dict(options or {}))
    if not corpus.utterances:
        raise UserError(f"dataset {name!r} at {root} holds no utterances")
    return corpus
