"""Guards that keep an extraction from mixing datasets or redoing finished work."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py

from erc.errors import UserError
from erc.extract.datasets.base import Corpus
from erc.features.schema import group_path
from erc.features.shards import parts_dir


def _describe(path: Path) -> tuple[str, str, int]:
    """(dataset, manifest_hash, n_utterances) of an existing cache; UserError if it is none."""
    try:
        with h5py.File(path, "r") as h5:
            if "schema_version" not in h5.attrs or "utterances" not in h5:
                raise UserError(f"{path} exists and is not an erc feature cache; choose another --out")
            return (str(h5.attrs.get("dataset", "")), str(h5.attrs.get("manifest_hash", "")),
                    int(h5["utterances/utterance_id"].shape[0]))
    except OSError:
        raise UserError(f"{path} exists and is not a readable HDF5 file; choose another --out") from None


def check_output(out: Path, corpus: Corpus, overwrite: bool = False) -> None:
    """Refuse an ``out`` (or a partial run beside it) that holds another dataset's cache, unless
    ``overwrite``; then record this corpus as the owner of the partial run."""
    mine = corpus.manifest_hash()
    if out.exists():
        dataset, mhash, n = _describe(out)
        if mhash != mine:
            if not overwrite:
                raise UserError(
                    f"{out} holds a cache of dataset {dataset!r} ({n} utterances) that is not this "
                    f"{corpus.name!r} corpus ({len(corpus.utterances)} utterances); "
                    "pass another --out, or --overwrite to replace it")
            out.unlink()
    pdir = parts_dir(out)
    meta = pdir / "meta.json"
    if meta.exists():
        try:
            owner = json.loads(meta.read_text())
        except (OSError, ValueError):
            owner = {}
        if owner.get("manifest_hash") != mine:
            if not overwrite:
                raise UserError(
                    f"{pdir} holds an unfinished extraction of dataset {owner.get('dataset')!r}, not of this "
                    f"{corpus.name!r} corpus; pass another --out, or --overwrite to discard it")
            shutil.rmtree(pdir)
    pdir.mkdir(parents=True, exist_ok=True)
    if not meta.exists():
        meta.write_text(json.dumps({"dataset": corpus.name, "manifest_hash": mine}))


def group_is_current(out: Path, modality: str, encoder: str, chash: str) -> bool:
    """True when ``out`` already holds this group extracted with the same config hash."""
    if not out.exists():
        return False
    with h5py.File(out, "r") as h5:
        path = group_path(modality, encoder)
        return path in h5 and str(h5[path].attrs.get("config_hash", "")) == chash
