"""The one writer of a feature cache: :class:`CacheWriter` locks the cache, claims it (and its
journal) for an utterance table, journals finished batches per encoder group, and commits each
group without copying the others.

A commit writes the group's own file in ``<cache>.groups/`` (streamed from the journal in blocks
of rows, checksummed), then a new root that links it, renamed over the old root
(:mod:`erc.features.layout`). A kill at any moment leaves either the old root or the new one,
never a cache that cannot be opened; the shards stay until the commit has landed, so re-running
finishes the job. A full disk or a read-only folder stops with one line
(:class:`~erc.features.faults.CacheWriteError`), removes its temporary files and leaves the cache
as it was.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from erc.errors import UserError
from erc.features import layout, members
from erc.features.atomic import replace_with, write_atomic
from erc.features.faults import disk_errors
from erc.features.groupfile import RowSource, owner_attrs, root_attrs, write_group_file, write_table_file
from erc.features.journal import JournalSource, ShardStore
from erc.features.lock import CacheLock
from erc.features.reader import FeatureCache
from erc.features.schema import UtteranceTable, group_path, members_dir, parts_dir


class CacheWriter:
    """Writes the groups of one cache for one utterance table.

    Creating it takes the cache's lock (:class:`~erc.features.lock.CacheBusy` when another process
    holds it), refuses an ``out`` (or an unfinished journal beside it) that holds another
    dataset's cache unless ``overwrite`` (which discards it), and records this table as the owner
    of the journal. ``shard``: "K/N" makes a partial cache (``--shard``), whose groups hold only
    the rows passed to :meth:`commit`. Call :meth:`close` (or use ``with``) to release the lock.
    """

    def __init__(self, path: Path, table: UtteranceTable, overwrite: bool = False, shard: str | None = None) -> None:
        self.path, self.table, self.shard = members.real_root(Path(path)), table, shard
        self.lock = CacheLock(self.path)
        with disk_errors(self.path):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.lock.acquire()
        try:
            with disk_errors(self.path):
                self._claim(overwrite)
                layout.sweep(self.path)
        except BaseException:
            self.lock.release()
            raise

    def _claim(self, overwrite: bool) -> None:
        mine = self.table.manifest_hash
        if self.path.exists():
            dataset, mhash, n, shard = _describe(self.path)
            if mhash != mine or shard != self.shard:
                if not overwrite:
                    what = f"part {shard} of " if shard else ""
                    if mhash == mine:
                        raise UserError(f"{self.path} holds {what or 'the whole of '}this corpus's cache, not "
                                        f"{'part ' + self.shard if self.shard else 'the whole'}; pass another --out, "
                                        "or --overwrite to replace it")
                    raise UserError(
                        f"{self.path} holds {what}a cache of dataset {dataset!r} ({n} utterances) that is not this "
                        f"{self.table.dataset!r} corpus ({len(self.table)} utterances); "
                        "pass another --out, or --overwrite to replace it")
                self.path.unlink()
        pdir = parts_dir(self.path)
        meta = pdir / "meta.json"
        owner_now = {"dataset": self.table.dataset, "manifest_hash": mine, "shard": self.shard}
        if meta.exists():
            try:
                owner = json.loads(meta.read_text())
            except (OSError, ValueError):
                owner = {}
            if owner.get("manifest_hash") != mine or owner.get("shard") != self.shard:
                if not overwrite:
                    raise UserError(
                        f"{pdir} holds an unfinished extraction of dataset {owner.get('dataset')!r}"
                        f"{' (part ' + owner['shard'] + ')' if owner.get('shard') else ''}, not of this "
                        f"{self.table.dataset!r} corpus{' (part ' + self.shard + ')' if self.shard else ''}; "
                        "pass another --out, or --overwrite to discard it")
                shutil.rmtree(pdir)
        if not meta.exists():
            write_atomic(meta, json.dumps(owner_now))

    def close(self) -> None:
        self.lock.release()

    def __enter__(self) -> CacheWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def is_current(self, modality: str, encoder: str, chash: str) -> bool:
        """True when the cache already holds this group extracted with the same config hash."""
        if not self.path.exists():
            return False
        try:  # through the reader: a group whose file is missing, foreign or resized is not current
            with FeatureCache(self.path, allow_partial=True) as cache:
                group = cache._objects.get(group_path(modality, encoder))
                return group is not None and str(group.attrs.get("config_hash", "")) == chash
        except (OSError, KeyError, UserError):
            return False

    def journal(self, modality: str, encoder: str) -> ShardStore:
        """The shard journal of one group (open it with the group's config hash and batch plan)."""
        return ShardStore(self.path, modality, encoder)

    def commit(self, modality: str, encoder: str, attrs: dict[str, Any], rows: np.ndarray | None = None) -> None:
        """Write group ``features/<modality>/<encoder>`` from its journal (replacing any old group),
        then drop the journal. ``rows``: the cache rows of a partial cache's group."""
        store = self.journal(modality, encoder)
        source = JournalSource(store, len(self.table), rows)
        try:
            self.commit_source(modality, encoder, source, attrs)
        finally:
            source.close()
        store.remove()

    def commit_source(self, modality: str, encoder: str, source: RowSource, attrs: dict[str, Any]) -> None:
        """Write a group from any :class:`~erc.features.groupfile.RowSource` and link it in."""
        with disk_errors(self.path):
            members_dir(self.path).mkdir(parents=True, exist_ok=True)
            member = _write_member(self.path, f"{modality}__{encoder}",
                                   lambda tmp: write_group_file(tmp, modality, encoder, source, attrs,
                                                                partial=self.shard is not None,
                                                                owner=owner_attrs(self.table)))
            try:
                attrs_root, links = self._links()
                path = group_path(modality, encoder)
                old = links.get(path)
                links[path] = (layout.relative(self.path, member), "/" + path)
                record = members.complete(self.path, links, members.read_record(attrs_root))
                attrs_root[members.RECORD_ATTR] = members.dump_record(record)
                layout.write_root(self.path, attrs_root, links)
            except BaseException:
                member.unlink(missing_ok=True)
                raise
            if old and old[0] and all(fname != old[0] for fname, _ in links.values()):
                (self.path.parent / old[0]).unlink(missing_ok=True)

    def _links(self) -> tuple[dict[str, Any], layout.Links]:
        """The root's attributes and links, writing the utterance table's file for a new cache and
        adopting an older single-file cache."""
        if self.path.exists():
            attrs, links, embedded = layout.read_root(self.path)
            if embedded:
                links = layout.adopt_embedded(self.path, links)
            return attrs, links
        table = _write_member(self.path, "utterances", lambda tmp: write_table_file(tmp, self.table))
        return root_attrs(self.table, self.shard), {"utterances": (layout.relative(self.path, table), "/utterances")}

    def finish(self) -> None:
        """Remove the journal folder once no group is pending in it."""
        pdir = parts_dir(self.path)
        if pdir.exists() and not any(p for p in pdir.iterdir() if p.name != "meta.json"):
            shutil.rmtree(pdir)


def _write_member(cache: Path, stem: str, write: Any) -> Path:
    """Write a new file of ``<cache>.groups/`` via a temporary name; returns its final path."""
    member = layout.new_member(cache, stem)
    replace_with(member, write)
    return member


def _describe(path: Path) -> tuple[str, str, int, str | None]:
    """(dataset, manifest_hash, n_utterances, shard) of an existing cache; UserError if it is none."""
    try:
        with h5py.File(path, "r") as h5:
            if "schema_version" not in h5.attrs:
                raise UserError(f"{path} exists and is not an erc feature cache; choose another --out")
            shard = h5.attrs.get("shard")
            n = h5.attrs.get("n_utterances")
            if n is None:
                n = h5["utterances/utterance_id"].shape[0] if "utterances" in h5 else 0
            return (str(h5.attrs.get("dataset", "")), str(h5.attrs.get("manifest_hash", "")), int(n),
                    str(shard) if shard is not None else None)
    except (OSError, KeyError):
        raise UserError(f"{path} exists and is not a readable HDF5 file; choose another --out") from None
