"""DialogueData: padding, masks, labels, speakers, frames, splits and folds."""

from __future__ import annotations

import time

import h5py
import numpy as np
import pytest
import torch

from erc.errors import UserError
from erc.train.dialogues import DialogueData
from erc.train.folds import FoldSpec
from tests.synth_cache import write_synthetic_cache

LENGTHS = [3, 5, 2, 4, 6, 3, 4, 5, 2, 3]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    p = tmp_path_factory.mktemp("dd") / "c.h5"
    return write_synthetic_cache(p, n_dialogues=10, lengths=LENGTHS, frames={"audio": 3}, unknown_label_rate=0.15, seed=1)


def test_shapes_masks_labels_and_pooled(cache):
    d = DialogueData(cache, ["t", "a", "video"])
    assert d.modalities == ["text", "audio", "video"]
    inp = d.inputs()
    assert inp.pooled_dims == {"text": 16, "audio": 12, "video": 10} and inp.frame_dims == {} and inp.n_classes == 4
    b = d.collate([0, 1, 2])
    assert b.mask.shape == (3, 5)
    assert b.mask.sum(1).tolist() == [3, 5, 2]
    assert b.pooled["text"].shape == (3, 5, 16)
    assert (b.labels[~b.mask] == -100).all() and (b.index[~b.mask] == -1).all()
    assert (b.pooled["audio"][~b.mask] == 0).all() and not b.present["audio"][~b.mask].any()
    with h5py.File(cache) as f:
        pooled = f["features/text/syn-text/pooled"][()]
        labels = [x.decode() for x in f["utterances/label"][()]]
    rows = b.index[b.mask].numpy()
    assert np.allclose(b.pooled["text"][b.mask].numpy(), pooled[rows])
    want = [int(labels[r][1:]) if labels[r] != "xxx" else -100 for r in rows]
    assert b.labels[b.mask].tolist() == want
    assert -100 in want  # some labels are outside the label list and are ignored


def test_speakers_are_indexed_per_dialogue(cache):
    d = DialogueData(cache, ["text"])
    b = d.collate(list(range(len(d))))
    # synthetic dialogues alternate two speakers: 0, 1, 0, 1, ... from the first turn
    for i, n in enumerate(LENGTHS):
        assert b.speakers[i, :n].tolist() == [t % 2 for t in range(n)]


def test_frames_are_padded_and_truncated(cache):
    d = DialogueData(cache, ["text", "audio"], frames=["a"], max_frames=4)
    assert d.inputs().frame_dims == {"audio": 3}
    b = d.collate([3, 4])
    fr, fm = b.frames["audio"], b.frame_mask["audio"]
    assert fr.shape[:2] == (2, 6) and fr.shape[3] == 3 and fm.shape == fr.shape[:3]
    with h5py.File(cache) as f:
        frames = f["features/audio/syn-audio/frames"][()]
        offsets = f["features/audio/syn-audio/offsets"][()]
    for bi in range(2):
        for li in range(int(b.mask[bi].sum())):
            r = int(b.index[bi, li])
            n = min(offsets[r + 1] - offsets[r], 4)
            assert int(fm[bi, li].sum()) == n
            assert np.allclose(fr[bi, li, :n].numpy(), frames[offsets[r]:offsets[r] + n])
            assert (fr[bi, li, n:] == 0).all()
    assert not fm[~b.mask].any()


def test_split_datasets_mask_other_splits(cache):
    d = DialogueData(cache, ["text"])
    for split in ("train", "dev", "test"):
        ds = d.dataset(split)
        assert len(ds) > 0
        b = ds.collate(list(ds))
        labelled = b.index[b.labels >= 0].numpy()
        assert set(d.split_of[labelled]) == {split}


def test_dev_is_carved_by_dialogue_when_missing(tmp_path):
    p = write_synthetic_cache(tmp_path / "nodev.h5", n_dialogues=20, splits=(0.8, 0.0, 0.2))
    d = DialogueData(p, ["text"], dev_fraction=0.25)
    assert len(d.dataset("dev")) == 4
    for rows in d.dialogue_rows:
        assert len(set(d.split_of[rows.numpy()])) == 1


def test_dialogue_folds_never_split_a_dialogue(cache):
    test_count = np.zeros(len(LENGTHS), dtype=int)
    for k in range(5):
        d = DialogueData(cache, ["text"], folds=FoldSpec(5, k, "dialogue", seed=3))
        for i, rows in enumerate(d.dialogue_rows):
            splits = set(d.split_of[rows.numpy()])
            assert len(splits) == 1
            test_count[i] += splits == {"test"}
        assert {"train", "dev", "test"} <= set(d.split_names)
    assert (test_count == 1).all()  # every dialogue is tested exactly once


def test_utterance_folds_warn_and_mask_labels(cache):
    with pytest.warns(UserWarning, match="leak"):
        d = DialogueData(cache, ["text"], folds=FoldSpec(3, 0, "utterance"))
    assert any(len(set(d.split_of[r.numpy()])) > 1 for r in d.dialogue_rows)
    ds = d.dataset("test")
    b = ds.collate(list(ds))
    assert set(d.split_of[b.index[b.labels >= 0].numpy()]) == {"test"}
    assert (b.mask.sum() > (b.labels >= 0).sum())  # whole dialogues are kept as context


def test_user_errors(cache, tmp_path):
    p = write_synthetic_cache(tmp_path / "two.h5", n_dialogues=4, dims={"text": 4})
    with pytest.raises(UserError, match="no audio features"):
        DialogueData(p, ["t", "a"])
    with pytest.raises(UserError, match="encoder 'nope'"):
        DialogueData(cache, {"text": "nope"})
    with pytest.raises(UserError, match="kept none"):
        DialogueData(cache, ["text"], frames=["text"])
    with pytest.raises(UserError, match="no feature cache"):
        DialogueData(tmp_path / "missing.h5", ["text"])
    with pytest.raises(UserError):
        FoldSpec(2, 0)


def test_iemocap_sized_epoch_is_fast(tmp_path):
    lengths = np.full(151, 7433 // 151)
    lengths[: 7433 - lengths.sum()] += 1
    p = write_synthetic_cache(tmp_path / "big.h5", n_dialogues=151, lengths=lengths.tolist(),
                              dims={"text": 1024, "audio": 1024, "video": 1000}, n_classes=6)
    t0 = time.perf_counter()
    d = DialogueData(p, ["t", "a", "v"])
    load = time.perf_counter() - t0
    ds = d.dataset("train")
    ids = list(ds)
    t0 = time.perf_counter()
    for i in range(0, len(ids), 16):
        b = ds.collate(ids[i:i + 16])
    epoch = time.perf_counter() - t0
    assert len(d.y) == 7433 and b.pooled["text"].dtype == torch.float32
    assert load < 5 and epoch < 1.0, (load, epoch)
