"""A cache's files belong together: a group file copied in from another cache, a deleted group file
(never replaced by a lookalike in the current folder), a file replaced after the commit, a wrong
``n_utterances``: each is named (the group and why) by every open and by ``erc cache verify``."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from erc.errors import UserError
from erc.features.layout import member_files
from erc.features.members import RECORD_ATTR
from erc.features.reader import FeatureCache
from erc.features.schema import members_dir
from erc.features.verify import verify_cache
from erc.features.writer import CacheWriter
from tests.cache_sources import ArraySource, table
from tests.cli_utils import assert_one_line_error, run_erc_here


def _cache(path: Path, n: int = 30, seed: str = "h", pooled_seed: int = 0) -> Path:
    with CacheWriter(path, table(n, seed=seed)) as w:
        w.commit_source("audio", "x", ArraySource(n, 8, seed=pooled_seed), {"config_hash": "a"})
        w.commit_source("text", "y", ArraySource(n, 4, seed=1), {"config_hash": "b"})
    return path


def _member(cache: Path, stem: str) -> Path:
    return next(p for p in member_files(cache) if p.name.startswith(stem))


def test_a_sound_cache_records_each_file_and_verifies(tmp_path):
    out = _cache(tmp_path / "c.h5")
    with h5py.File(out, "r") as h5:
        assert RECORD_ATTR in h5.attrs
    res = run_erc_here("cache", "verify", str(out))
    assert res.code == 0 and "OK" in res.out and "note" not in res.out, res.out + res.err


def test_a_group_file_copied_from_another_cache_is_named(tmp_path):
    mine = _cache(tmp_path / "c.h5")
    other = _cache(tmp_path / "o.h5", seed="other")  # another corpus of the same size
    shutil.copyfile(_member(other, "audio__x"), _member(mine, "audio__x"))
    with FeatureCache(mine) as cache:
        assert "audio/x" not in [f"{g.modality}/{g.encoder}" for g in cache.groups()]
        with pytest.raises(UserError, match="audio/x cannot be read: its file .* belongs to another cache"):
            cache.pooled("audio", "x")
        cache.pooled("text", "y")  # the sound group still reads
    res = run_erc_here("cache", "verify", str(mine))
    assert res.code == 1 and "FAIL audio/x: its file" in res.out and "another cache" in res.out, res.out


def test_a_same_size_file_of_the_same_corpus_fails_the_recorded_checksum(tmp_path):
    mine = _cache(tmp_path / "c.h5")
    other = _cache(tmp_path / "o.h5", pooled_seed=5)  # same corpus, same sizes, other values
    src, dst = _member(other, "audio__x"), _member(mine, "audio__x")
    assert src.stat().st_size == dst.stat().st_size
    shutil.copyfile(src, dst)
    res = run_erc_here("cache", "verify", str(mine))
    assert res.code == 1 and "FAIL audio/x: its file" in res.out and "checksum the root recorded" in res.out, res.out


def test_a_resized_group_file_is_refused_on_open_without_reading_it(tmp_path):
    mine = _cache(tmp_path / "c.h5")
    with open(_member(mine, "text__y"), "ab") as f:
        f.write(b"\0" * 100)
    with FeatureCache(mine) as cache:
        with pytest.raises(UserError, match="text/y cannot be read: its file .* bytes, the root recorded"):
            cache.pooled("text", "y")


def test_a_deleted_group_file_is_never_found_through_the_current_folder(tmp_path, monkeypatch):
    mine = _cache(tmp_path / "a" / "c.h5")
    decoy = tmp_path / "cwd"
    decoy.mkdir()
    shutil.copytree(members_dir(mine), members_dir(decoy / "c.h5"))  # a lookalike where HDF5 would look
    _member(mine, "audio__x").unlink()
    monkeypatch.chdir(decoy)
    with FeatureCache(mine) as cache:
        with pytest.raises(UserError, match="audio/x cannot be read: its file .* is missing beside c.h5"):
            cache.pooled("audio", "x")
    res = run_erc_here("cache", "verify", str(mine))
    assert res.code == 1 and "FAIL audio/x: its file" in res.out and "missing beside c.h5" in res.out, res.out


def test_a_deleted_utterance_table_is_one_line(tmp_path):
    mine = _cache(tmp_path / "c.h5")
    _member(mine, "utterances").unlink()
    res = run_erc_here("cache", "verify", str(mine))
    assert_one_line_error(res, "its utterance table", "missing beside c.h5")


def test_a_wrong_n_utterances_attribute_is_one_line(tmp_path):
    mine = _cache(tmp_path / "c.h5")
    with h5py.File(mine, "r+") as h5:
        h5.attrs["n_utterances"] = 31
    res = run_erc_here("cache", "verify", str(mine))
    assert_one_line_error(res, "utterance table", "31 utterances")


def test_a_cache_without_the_record_opens_notes_it_and_is_recorded_on_the_next_commit(tmp_path):
    mine = _cache(tmp_path / "c.h5")
    with h5py.File(mine, "r+") as h5:  # as an erc before the record wrote it
        del h5.attrs[RECORD_ATTR]
    res = run_erc_here("cache", "verify", str(mine))
    assert res.code == 0 and "records no size or checksum of 3" in res.out, res.out
    with CacheWriter(mine, table(30)) as w:
        w.commit_source("video", "z", ArraySource(30, 2), {"config_hash": "c"})
    with FeatureCache(mine) as cache:
        assert sorted(cache.record) == sorted(cache.member_files) and verify_cache(cache) == []
        np.testing.assert_array_equal(cache.pooled("audio", "x"), ArraySource(30, 8).pooled(0, 30))


def test_a_link_leaving_the_cache_folder_is_refused(tmp_path):
    mine = _cache(tmp_path / "c.h5")
    elsewhere = tmp_path / "elsewhere.h5"
    os.replace(_member(mine, "text__y"), elsewhere)
    with h5py.File(mine, "r+") as h5:
        del h5["features/text/y"]
        h5["features/text/y"] = h5py.ExternalLink(str(elsewhere), "/features/text/y")
    with FeatureCache(mine) as cache:
        assert "features/text/y" in cache.broken and "outside the cache's folder" in cache.broken["features/text/y"]
