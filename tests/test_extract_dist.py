"""Extraction past one process: torchrun ranks (gloo) writing one journal, --shard K/N parts and
`erc cache merge`, with the checks that keep a merged cache whole."""

from __future__ import annotations

import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

from erc.errors import UserError
from erc.extract.datasets import load_dataset
from erc.extract.encoders import build_encoder
from erc.extract.plan import split_batches
from erc.extract.provenance import group_config_hash
from erc.extract.run import RunConfig, dialogue_positions, extract, plan_batches, run_batches
from erc.features.journal import ShardStore
from erc.features.merge import merge_parts
from erc.features.reader import FeatureCache
from erc.features.schema import parts_dir
from erc.features.verify import verify_cache
from erc.cli_extract import parse_shard
from tests.cli_utils import ROOT, assert_one_line_error, run_erc
from tests.fake_encoders import FakeAudioEncoder, FakeConfig, fake_corpus

KEYS = ("pooled", "frames", "offsets", "present", "status")


def _manifest(path, n: int) -> None:
    rng = np.random.default_rng(1)
    words = "good bad happy sad angry calm fine terrible wonderful okay sure no yes maybe".split()
    rows = ["dialogue_id,utterance_id,turn,speaker,text,label,split"]
    for i in range(n):
        text = " ".join(rng.choice(words, size=int(rng.integers(1, 14))))
        rows.append(f"d{i // 6},u{i},{i % 6},{'AB'[i % 2]},{text},{'pos' if i % 3 else 'neg'},"
                    f"{['train', 'dev', 'test'][(i // 6) % 3]}")
    path.write_text("\n".join(rows) + "\n")


def test_two_gloo_ranks_under_torchrun_resume_a_dead_rank_and_equal_one_process(tmp_path):
    manifest = tmp_path / "m.csv"
    _manifest(manifest, 72)
    corpus = load_dataset("manifest", manifest)
    one, two = tmp_path / "one.h5", tmp_path / "two.h5"
    extract(corpus, [build_encoder("text", "minilm", {"batch_size": "4"})], one, RunConfig(device="cpu"), "one")
    # A rank that died: three of its batches are finished in the journal of the two-process run.
    enc = build_encoder("text", "minilm", {"batch_size": "4"})
    enc.load("cpu")
    plan = plan_batches(enc, corpus.utterances)
    store = ShardStore(two, "text", "minilm")
    store.open(group_config_hash(enc, "float16"), plan)
    run_batches(enc, dialogue_positions(corpus), plan, (1, 6, 11), store, RunConfig(device="cpu"), lambda n: None)
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", COLUMNS="200")
    if os.path.exists("/sys/class/net/lo"):
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")  # the ranks talk over loopback, whatever the hostname resolves to
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                          "-m", "erc.cli", "extract", "--dataset", "manifest", "--root", str(manifest),
                          "--text", "minilm", "--audio", "none", "--video", "none", "--set", "text.batch_size=4",
                          "--device", "cpu", "--out", str(two), "--quiet"],
                         env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stderr.count("extraction summary") == 1  # rank 0 alone reports
    assert "(3 batches reused)" in res.stderr
    assert not parts_dir(two).exists()
    with h5py.File(one) as a, h5py.File(two) as b:
        # Same batches, one thread per process against one process: equal up to the order of
        # floating-point reductions inside a batch's matrix products.
        np.testing.assert_allclose(a["features/text/minilm/pooled"][()], b["features/text/minilm/pooled"][()],
                                   rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(a["features/text/minilm/frames"][()].astype(np.float32),
                                   b["features/text/minilm/frames"][()].astype(np.float32), rtol=2e-3, atol=2e-3)
        for key in ("offsets", "present", "status"):
            np.testing.assert_array_equal(a[f"features/text/minilm/{key}"][()], b[f"features/text/minilm/{key}"][()])
        for col in ("utterance_id", "text", "split"):
            np.testing.assert_array_equal(a[f"utterances/{col}"][()], b[f"utterances/{col}"][()])
    with FeatureCache(two) as cache:
        assert '"processes": 2' in cache.group("text", "minilm").attrs["extraction"]


def _parts(tmp_path, corpus, n: int, **cfg) -> list:
    paths = []
    for k in range(1, n + 1):
        path = tmp_path / f"p{k}of{n}.h5"
        extract(corpus, [FakeAudioEncoder(FakeConfig(batch_size=2, **cfg))], path, RunConfig(device="cpu", shard=(k, n)), "x")
        paths.append(path)
    return paths


def test_shards_merged_equal_a_one_process_run(tmp_path):
    corpus = fake_corpus(tmp_path, n_dialogues=8)
    full = tmp_path / "full.h5"
    extract(corpus, [FakeAudioEncoder(FakeConfig(batch_size=2))], full, RunConfig(device="cpu"), "x")
    parts = _parts(tmp_path, corpus, 3)
    with FeatureCache(parts[0], allow_partial=True) as p:
        rows = p.rows("audio", "fake")
        assert 0 < len(rows) < len(corpus.utterances) and p.shard == "1/3"
    with pytest.raises(UserError, match="erc cache merge"):
        FeatureCache(parts[0])
    merged = tmp_path / "merged.h5"
    assert merge_parts(merged, parts) == ["audio/fake"]
    with h5py.File(full) as a, h5py.File(merged) as b:
        for key in KEYS:
            np.testing.assert_array_equal(a[f"features/audio/fake/{key}"][()], b[f"features/audio/fake/{key}"][()])
        np.testing.assert_array_equal(a["utterances/utterance_id"][()], b["utterances/utterance_id"][()])
    with FeatureCache(merged) as cache:
        assert verify_cache(cache) == [] and cache.shard is None


def test_merge_names_the_first_problem_of_parts_that_do_not_make_one_cache(tmp_path):
    corpus = fake_corpus(tmp_path, n_dialogues=8)
    parts = _parts(tmp_path, corpus, 3)
    out = tmp_path / "m.h5"
    with pytest.raises(UserError, match=r"rows are in no part.*the parts given are 1/3, 3/3 of 3"):
        merge_parts(out, [parts[0], parts[2]])
    with pytest.raises(UserError, match="part 2/3 is given twice"):
        merge_parts(out, [parts[0], parts[1], parts[1], parts[2]])
    (tmp_path / "o").mkdir()
    foreign = _parts(tmp_path / "o", fake_corpus(tmp_path / "o", n_dialogues=9), 3)
    with pytest.raises(UserError, match="different manifests"):
        merge_parts(out, [parts[0], parts[1], foreign[2]])
    (tmp_path / "c").mkdir()
    changed = _parts(tmp_path / "c", corpus, 3, dim=4)
    with pytest.raises(UserError, match="another encoder config"):
        merge_parts(out, [parts[0], parts[1], changed[2]])
    assert not out.exists()
    res = run_erc("cache", "merge", str(out), str(parts[0]), str(parts[2]))
    assert_one_line_error(res, "in no part")


def test_batches_split_by_cost_are_balanced_disjoint_and_deterministic():
    rng = np.random.default_rng(0)
    costs = sorted(rng.exponential(10, size=101).tolist(), reverse=True)
    for parts in (1, 2, 3, 8):
        split = split_batches(costs, parts)
        assert split == split_batches(costs, parts)
        assert sorted(i for s in split for i in s) == list(range(len(costs)))
        loads = [sum(costs[i] for i in s) for s in split]
        assert max(loads) - min(loads) <= max(costs)


def test_shard_option_takes_k_of_n():
    assert parse_shard("2/4") == (2, 4) and parse_shard(None) is None
    for bad in ("0/2", "3/2", "2", "a/b", "1/0"):
        with pytest.raises(UserError, match="--shard takes K/N"):
            parse_shard(bad)
