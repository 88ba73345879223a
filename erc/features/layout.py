"""A cache on disk: a small root file plus one file per group, joined by HDF5 external links.

``<cache>`` holds the root attributes and, for ``/utterances`` and every
``/features/<modality>/<encoder>``, an external link into a file of ``<cache>.groups/``
(relative to the root's folder, so the pair can be moved together). Committing a group writes
that group's file, then a new root (a few KB) that is renamed over the old one: nothing else is
copied, and a kill at any moment leaves the old root or the new one, both complete. Group files
that no root links any more are deleted by the writer that holds the lock.

The root records the name, size and SHA-256 of every file it links (:mod:`erc.features.members`),
so a file replaced, copied in from another cache or deleted is named on open instead of being read.

A cache written by an erc before this layout (one file holding everything) is adopted on its first
commit: the old file is hard-linked into ``<cache>.groups/`` (copied where hard links are not
supported) and the new root links to the groups inside it.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
from pathlib import Path
from typing import Any

import h5py

from erc.features.atomic import fsync_dir, fsync_file, replace_with, temp_path
from erc.features.groupfile import h5_text, new_h5
from erc.features.schema import group_path, members_dir

Links = dict[str, tuple[str, str]]
"""HDF5 path in the root (``utterances``, ``features/m/e``) -> (file relative to the root's folder,
object path inside that file)."""


def read_root(cache: Path) -> tuple[dict[str, Any], Links, bool]:
    """(root attributes, links, embedded): ``embedded`` is True for a single-file cache of an older
    erc, whose groups are inside the root itself."""
    attrs: dict[str, Any] = {}
    links: Links = {}
    embedded = False
    with h5py.File(cache, "r") as h5:
        attrs = dict(h5.attrs.items())
        paths = ["utterances"] + [group_path(m, e) for m in _names(h5, "features") for e in _names(h5, f"features/{m}")]
        for path in paths:
            link = h5.get(path, getlink=True)
            if isinstance(link, h5py.ExternalLink):
                links[path] = (link.filename, link.path)
            elif link is not None:
                embedded = True
                links[path] = ("", "/" + path)
    return attrs, links, embedded


def _names(h5: h5py.File, path: str) -> list[str]:
    link = h5.get(path, getlink=True)
    if link is None or isinstance(link, h5py.ExternalLink):
        return []
    return sorted(h5[path])


def adopt_embedded(cache: Path, links: Links) -> Links:
    """Links of an older single-file cache into a hard link (or copy) of it in ``<cache>.groups/``."""
    folder = members_dir(cache)
    folder.mkdir(parents=True, exist_ok=True)
    legacy = new_member(cache, "legacy")
    tmp = temp_path(legacy)
    tmp.unlink()
    try:
        os.link(cache, tmp)
    except OSError:
        shutil.copy2(cache, tmp)
        fsync_file(tmp)
    os.replace(tmp, legacy)
    fsync_dir(folder)
    rel = relative(cache, legacy)
    return {path: (rel if not fname else fname, target) for path, (fname, target) in links.items()}


def new_member(cache: Path, stem: str) -> Path:
    """A new, unused file name in ``<cache>.groups/`` for ``stem`` (e.g. ``text__minilm``)."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", stem)
    return members_dir(cache) / f"{safe}.{secrets.token_hex(4)}.h5"


def relative(cache: Path, member: Path) -> str:
    return f"{members_dir(cache).name}/{member.name}"


def write_root(cache: Path, attrs: dict[str, Any], links: Links) -> None:
    """Write a new root (attributes + external links) beside ``cache`` and rename it over."""
    def build(tmp: Path) -> None:
        with new_h5(tmp) as h5:
            for k, v in attrs.items():
                h5.attrs[k] = h5_text(v) if isinstance(v, str) else v
            for path in sorted(links):
                fname, target = links[path]
                h5[path] = h5py.ExternalLink(fname, target)

    replace_with(cache, build)


def sweep(cache: Path) -> None:
    """Delete what no root links: group files of earlier commits and temporary files left by a
    killed writer (call only while holding the cache's lock)."""
    for stale in cache.parent.glob(f".{cache.name}.*.tmp"):
        stale.unlink(missing_ok=True)
    folder = members_dir(cache)
    if not folder.is_dir():
        return
    used: set[str] = set()
    if cache.exists():
        try:
            _, links, _ = read_root(cache)
        except OSError:
            return  # not readable: leave everything for the user to look at
        used = {Path(fname).name for fname, _ in links.values() if fname}
    for f in folder.iterdir():
        if f.name not in used:
            f.unlink(missing_ok=True)
    if not any(folder.iterdir()):
        folder.rmdir()


def member_files(cache: Path) -> list[Path]:
    """The files a cache's root links to (for copying or measuring a cache)."""
    if not cache.exists():
        return []
    _, links, _ = read_root(cache)
    return sorted({cache.parent / fname for fname, _ in links.values() if fname})
