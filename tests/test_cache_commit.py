"""Committing a group writes that group's file and a small root, never the other groups; h5py
readers see the usual schema through the links; a kill -9 during commits never leaves a cache
that cannot be opened."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import h5py
import numpy as np

from erc.features.layout import member_files
from erc.features.reader import FeatureCache
from erc.features.schema import members_dir
from erc.features.verify import verify_cache
from erc.features.writer import CacheWriter
from tests.cache_sources import ArraySource, table
from tests.cli_utils import ROOT


def _written_bytes() -> int:
    """Bytes this process has passed to write calls so far (``wchar`` of /proc/self/io)."""
    with open("/proc/self/io") as f:
        return int(next(line for line in f if line.startswith("wchar")).split()[1])


def test_adding_a_group_writes_that_group_only_and_leaves_the_others_files_untouched(tmp_path):
    out = tmp_path / "c.h5"
    n = 2000
    with CacheWriter(out, table(n)) as w:
        w.commit_source("video", "big", ArraySource(n, 16, frame_dim=512, frames_per_row=16), {"config_hash": "x"})
    big = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in member_files(out)}
    big_bytes = sum(p.stat().st_size for p in big)
    assert big_bytes > 10e6
    before = _written_bytes()
    with CacheWriter(out, table(n)) as w:
        w.commit_source("text", "small", ArraySource(n, 64, seed=1), {"config_hash": "y"})
    written = _written_bytes() - before
    small = [p for p in member_files(out) if p not in big]
    assert len(small) == 1
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in big} == big  # not rewritten, not copied
    group_bytes = small[0].stat().st_size
    assert written <= 1.1 * group_bytes + 64 * 1024, (written, group_bytes, big_bytes)
    with FeatureCache(out) as cache:
        assert verify_cache(cache) == []
        np.testing.assert_array_equal(cache.pooled("text", "small"), ArraySource(n, 64, seed=1).pooled(0, n))


def test_h5py_sees_the_usual_schema_and_the_cache_moves_with_its_folder(tmp_path):
    out = tmp_path / "a" / "c.h5"
    src = ArraySource(40, 8, frame_dim=4, frames_per_row=3)
    with CacheWriter(out, table(40)) as w:
        w.commit_source("audio", "x", src, {"config_hash": "h"})
    moved = tmp_path / "b" / "c.h5"
    moved.parent.mkdir()
    shutil.move(out, moved)
    shutil.move(members_dir(out), members_dir(moved))
    os.chdir(tmp_path)  # external links resolve against the root's folder, not the working folder
    with h5py.File(moved, "r") as h5:
        assert sorted(h5["utterances"]) == sorted(["utterance_id", "dialogue_id", "turn", "speaker", "label",
                                                    "split", "text"])
        assert list(h5["features"]) == ["audio"] and list(h5["features/audio"]) == ["x"]
        g = h5["features/audio/x"]
        assert sorted(g) == ["frames", "offsets", "pooled", "present", "status"]
        assert g["pooled"].shape == (40, 8) and g["offsets"].shape == (41,)
        np.testing.assert_array_equal(g["frames"][()], src.frames(0, 40))
        assert g.attrs["config_hash"] == "h" and h5.attrs["schema_version"] == 1
        assert all(g[k].fletcher32 for k in ("frames", "offsets", "pooled", "present")) and "crc32" in g["status"].attrs
        assert h5["utterances/utterance_id"].asstr()[3] == "u3"


def test_a_single_file_cache_of_an_older_erc_is_adopted_without_copying(tmp_path):
    out = tmp_path / "c.h5"
    with CacheWriter(out, table(30)) as w:
        w.commit_source("audio", "old", ArraySource(30, 8), {"config_hash": "h"})
    flat = tmp_path / "flat.h5"
    with h5py.File(out, "r") as src, h5py.File(flat, "w") as dst:  # the layout before group files
        for k, v in src.attrs.items():
            dst.attrs[k] = v
        src.copy("utterances", dst, expand_external=True)
        dst.create_group("features")
        src.copy("features/audio", dst["features"], expand_external=True)
    shutil.rmtree(members_dir(out))
    os.replace(flat, out)
    inode = out.stat().st_ino
    with CacheWriter(out, table(30)) as w:
        w.commit_source("text", "new", ArraySource(30, 4, seed=2), {"config_hash": "g"})
    legacy = [p for p in member_files(out) if p.name.startswith("legacy")]
    assert len(legacy) == 1 and legacy[0].stat().st_ino == inode  # a hard link, not a copy
    with FeatureCache(out) as cache:
        np.testing.assert_array_equal(cache.pooled("audio", "old"), ArraySource(30, 8).pooled(0, 30))
        assert cache.has("text", "new") and verify_cache(cache) == []


COMMIT_LOOP = """
import sys
from pathlib import Path
from erc.features.writer import CacheWriter
from tests.cache_sources import ArraySource, table
w = CacheWriter(Path(sys.argv[1]), table(3000))
i = 0
while True:
    w.commit_source("video", "v", ArraySource(3000, 32, frame_dim=256, frames_per_row=6, seed=i % 2), {"config_hash": str(i)})
    i += 1
"""


def test_kill_9_at_any_moment_of_commits_leaves_an_openable_cache(tmp_path):
    out = tmp_path / "c.h5"
    with CacheWriter(out, table(3000)) as w:
        w.commit_source("video", "v", ArraySource(3000, 32, frame_dim=256, frames_per_row=6), {"config_hash": "0"})
    versions = [ArraySource(3000, 32, seed=s).pooled(0, 3000) for s in (0, 1)]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    rng = np.random.default_rng(0)
    mid_commit = 0
    for _ in range(5):
        stale = set(members_dir(out).glob(".*.tmp"))
        proc = subprocess.Popen([sys.executable, "-c", COMMIT_LOOP, str(out)], env=env, cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        while time.time() < deadline and not set(members_dir(out).glob(".*.tmp")) - stale:
            time.sleep(0.001)  # a commit has started: its group file is being written
        time.sleep(float(rng.uniform(0.0, 0.15)))  # then somewhere in it, or in the root's swap after it
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        mid_commit += bool(set(members_dir(out).glob(".*.tmp")) - stale or list(tmp_path.glob(".c.h5.*.tmp")))
        with FeatureCache(out) as cache:
            assert verify_cache(cache) == []
            pooled = cache.pooled("video", "v")
            assert any(np.array_equal(pooled, v) for v in versions)
    assert mid_commit >= 2  # kills that left a commit's temporary file behind: they hit a commit
    with CacheWriter(out, table(3000)):  # the next writer sweeps what the killed ones left
        pass
    assert not list(tmp_path.glob(".*.tmp"))
    assert sorted(p.name for p in members_dir(out).iterdir()) == sorted(p.name for p in member_files(out))
