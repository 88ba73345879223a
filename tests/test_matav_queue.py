"""MaTAV's momentum queues (ring buffer) and the EMA update of the momentum projection heads."""

from __future__ import annotations

import torch

from tests.batches import random_batch
from erc.heads import HeadInputs, build_head

DIMS = {"text": 8, "audio": 6, "video": 5}


def tiny(**kw):
    cfg = {"dim": 4, "hidden": 8, "queue_size": 5, "fusion_layers": 1, "fusion_heads": 2, "mamba_layers": 1}
    cfg.update({k: str(v) for k, v in kw.items()})
    return build_head("matav", HeadInputs(DIMS, {}, 3), cfg)


def test_enqueue_wraps_around() -> None:
    head = tiny()
    a = torch.arange(12.0).view(3, 4)
    b = 100 + torch.arange(16.0).view(4, 4)
    head.enqueue("text", a)
    assert int(head.queue_ptr_text) == 3
    torch.testing.assert_close(head.queue("text")[:3], a)
    head.enqueue("text", b)  # rows 3, 4, then wraps to 0, 1
    assert int(head.queue_ptr_text) == 2
    torch.testing.assert_close(head.queue("text")[3:5], b[:2])
    torch.testing.assert_close(head.queue("text")[0:2], b[2:])
    torch.testing.assert_close(head.queue("text")[2], a[2])


def test_enqueue_more_than_queue_keeps_last() -> None:
    head = tiny()
    head.enqueue("audio", torch.zeros(1, 4))
    keys = torch.arange(28.0).view(7, 4)
    head.enqueue("audio", keys)  # only the last 5 fit; pointer advances by 5
    assert int(head.queue_ptr_audio) == 1
    got = {tuple(r.tolist()) for r in head.queue("audio")}
    assert got == {tuple(r.tolist()) for r in keys[-5:]}


def test_forward_enqueues_present_real_utterances_only() -> None:
    head = tiny(queue_size=1000)
    batch = random_batch(3, 5, DIMS, seed=2)
    head.train()
    head(batch)
    for m in DIMS:
        n = int((batch.present[m] & batch.mask).sum())
        assert int(getattr(head, f"queue_ptr_{m}")) == n


def test_momentum_update_is_ema() -> None:
    head = tiny(momentum=0.9)
    with torch.no_grad():
        for p in head.proj_m.parameters():
            p.normal_()
    q = [p.detach().clone() for p in head.proj.parameters()]
    k = [p.detach().clone() for p in head.proj_m.parameters()]
    head.after_step()
    for pk, k0, q0 in zip(head.proj_m.parameters(), k, q):
        torch.testing.assert_close(pk, 0.9 * k0 + 0.1 * q0)
    assert not any(p.requires_grad for p in head.proj_m.parameters())


def test_mec_skipped_with_one_modality() -> None:
    head = build_head("matav", HeadInputs({"text": 8}, {}, 3), {"dim": 4, "hidden": 8, "fusion_heads": 2})
    head.train()
    out = head(random_batch(2, 3, {"text": 8}, seed=0))
    assert float(out.aux_loss.detach()) == 0.0 and "mec" not in out.parts
    assert not hasattr(head, "proj_m")


def test_queue_records_which_utterance_each_key_came_from() -> None:
    head = tiny(queue_size=1000)
    assert bool((head.queue_ids("text") == -1).all())  # the random start belongs to no utterance
    batch = random_batch(3, 5, DIMS, seed=2)
    head.train()
    head(batch)
    for m in DIMS:
        real = batch.present[m] & batch.mask
        n = int(real.sum())
        assert head.queue_ids(m)[:n].tolist() == batch.index[real].tolist()
        assert bool((head.queue_ids(m)[n:] == -1).all())
    head.enqueue("text", torch.zeros(2, 4))  # keys without ids: -1
    n = int((batch.present["text"] & batch.mask).sum())
    assert head.queue_ids("text")[n:n + 2].tolist() == [-1, -1]


def test_mec_term_is_weight_times_the_sum_of_pairs_without_own_keys(monkeypatch) -> None:
    from erc.heads import matav as matav_mod

    seen = {}
    real_loss = matav_mod.mec_loss

    def spy(*args, **kwargs):
        seen.update(kwargs)
        seen["out"] = real_loss(*args, **kwargs)
        return seen["out"]

    monkeypatch.setattr(matav_mod, "mec_loss", spy)
    head = tiny(queue_size=1000, mec_weight=0.3)
    head.train()
    batch = random_batch(3, 5, DIMS, seed=4)
    head(batch)
    out = head(batch)  # the queues now hold these utterances' own keys from the first step
    loss, n_pairs = seen["out"]
    assert n_pairs == 3
    torch.testing.assert_close(out.aux_loss, 0.3 * loss)
    assert out.parts["mec"] == float(loss.detach())
    rows = batch.mask & (batch.labels != -100)
    assert seen["ids"].tolist() == batch.index[rows].tolist()  # each row's own keys are left out
