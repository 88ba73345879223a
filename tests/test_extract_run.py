"""The extraction loop: cache contents, per-utterance failures, resume, and guards."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from erc.errors import UserError
from erc.extract.run import RunConfig, dialogue_positions, extract, plan_batches
from erc.features.reader import FeatureCache
from erc.features.journal import ShardStore
from erc.features.schema import parts_dir
from erc.features.verify import verify_cache
from tests.fake_encoders import FakeAudioEncoder, FakeConfig, fake_corpus


def _run(corpus, out, **cfg):
    return extract(corpus, [FakeAudioEncoder(FakeConfig(**cfg))], out, RunConfig(device="cpu"), "erc extract test")


def test_extract_writes_rows_in_corpus_order_with_ragged_frames(tmp_path):
    corpus = fake_corpus(tmp_path)
    out = tmp_path / "c.h5"
    [summary] = _run(corpus, out)
    assert (summary.ok, summary.missing, summary.failed) == (18, 1, 1)
    with FeatureCache(out) as cache:
        assert cache.utterances()["utterance_id"] == [u.utterance_id for u in corpus.utterances]
        frames, offsets = cache.frames("audio", "fake")
        pooled = cache.pooled("audio", "fake")
        present = cache.present("audio", "fake")
        for i in np.flatnonzero(present):
            np.testing.assert_allclose(frames[offsets[i]: offsets[i + 1]].astype(np.float32).mean(0),
                                       pooled[i], atol=2e-3)
        assert not present[0] and not present[1]
        assert cache.status("audio", "fake")[0].startswith("failed: cannot decode")
        assert cache.status("audio", "fake")[1].startswith("missing: file not found")
        assert offsets[1] - offsets[0] == 0
        assert verify_cache(cache) == []
    assert not parts_dir(out).exists()


def test_batches_are_length_sorted_and_deterministic(tmp_path):
    corpus = fake_corpus(tmp_path)
    enc = FakeAudioEncoder(FakeConfig())
    plan = plan_batches(enc, corpus.utterances)
    lengths = [len(corpus.utterances[i].text) for b in plan for i in b]
    assert lengths == sorted(lengths, reverse=True)
    assert plan == plan_batches(enc, corpus.utterances)
    assert sorted(i for b in plan for i in b) == list(range(len(corpus.utterances)))


def test_resume_reuses_finished_batches_and_matches_a_full_run(tmp_path):
    corpus = fake_corpus(tmp_path)
    full = tmp_path / "full.h5"
    _run(corpus, full)
    # Simulate a run killed after two batches: write their shards, then re-run.
    part = tmp_path / "part.h5"
    enc = FakeAudioEncoder(FakeConfig())
    from erc.extract.provenance import group_config_hash
    from erc.extract.run import run_batches

    plan = plan_batches(enc, corpus.utterances)
    store = ShardStore(part, "audio", "fake")
    store.open(group_config_hash(enc, "float16"), plan)
    run_batches(enc, dialogue_positions(corpus), plan, range(2), store, RunConfig(), lambda n: None)
    [summary] = _run(corpus, part)
    assert summary.resumed_batches == 2 and summary.state == "resumed"
    with h5py.File(full) as a, h5py.File(part) as b:
        for key in ("pooled", "frames", "offsets", "present", "status"):
            np.testing.assert_array_equal(a[f"features/audio/fake/{key}"][()], b[f"features/audio/fake/{key}"][()])


def test_second_run_with_same_config_is_up_to_date(tmp_path):
    corpus = fake_corpus(tmp_path)
    out = tmp_path / "c.h5"
    _run(corpus, out)
    [summary] = _run(corpus, out)
    assert summary.state == "up to date"


def test_re_extracting_one_group_leaves_the_others_untouched(tmp_path):
    corpus = fake_corpus(tmp_path)
    out = tmp_path / "c.h5"
    _run(corpus, out, name="a")
    _run(corpus, out, name="b")
    with h5py.File(out) as h5:
        before = h5["features/audio/a/pooled"][()]
    _run(corpus, out, name="b", dim=4)
    with FeatureCache(out) as cache:
        np.testing.assert_array_equal(cache.pooled("audio", "a"), before)
        assert cache.group("audio", "b").dim == 4


def test_output_holding_another_dataset_is_refused(tmp_path):
    out = tmp_path / "c.h5"
    _run(fake_corpus(tmp_path), out)
    other = fake_corpus(tmp_path, n_dialogues=3)
    with pytest.raises(UserError, match="holds a cache of dataset"):
        _run(other, out)
    _run_over = extract(other, [FakeAudioEncoder(FakeConfig())], out, RunConfig(device="cpu", overwrite=True), "x")
    assert _run_over[0].n == 12


def test_output_that_is_not_a_cache_is_refused(tmp_path):
    out = tmp_path / "c.h5"
    out.write_text("hello")
    with pytest.raises(UserError, match="not a readable HDF5"):
        _run(fake_corpus(tmp_path), out)


def test_verify_reports_nan_and_bad_offsets(tmp_path):
    out = tmp_path / "c.h5"
    _run(fake_corpus(tmp_path), out)
    with h5py.File(out, "r+") as h5:
        h5["features/audio/fake/pooled"][3, 0] = np.nan
        h5["features/audio/fake/offsets"][-1] += 1
    with FeatureCache(out) as cache:
        problems = verify_cache(cache)
    assert any("NaN" in p for p in problems)
    assert any("offsets end at" in p for p in problems)


def test_dialogue_positions_follow_rows_even_when_dialogues_interleave(tmp_path):
    corpus = fake_corpus(tmp_path, n_dialogues=3, per_dialogue=3)
    corpus.utterances = corpus.utterances[::2] + corpus.utterances[1::2]  # rows no longer grouped
    for u, (dialogue, pos) in zip(corpus.utterances, dialogue_positions(corpus)):
        assert dialogue[pos] is u and all(x.dialogue_id == u.dialogue_id for x in dialogue)


def test_load_seconds_count_an_encoder_that_loads_on_its_first_batch(tmp_path):
    """A cross-fitted group's parts load in ``Encoder.ready``, after ``load``: their time is the
    summary's load time, not encoding time (benchmarks/extract_speed.py subtracts it)."""
    import time

    class LateLoading(FakeAudioEncoder):
        loaded_late = False

        def ready(self, utterances) -> None:
            if not self.loaded_late:
                time.sleep(0.3)
                self.loaded_late = True

    corpus = fake_corpus(tmp_path)
    [summary] = extract(corpus, [LateLoading(FakeConfig())], tmp_path / "c.h5", RunConfig(device="cpu"), "test")
    assert summary.load_seconds >= 0.3 and summary.ok == 18
