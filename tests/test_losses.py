"""Contrastive losses against small hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from erc.heads.losses import _own_pairs, _QueueInfoNCE, info_nce, info_nce_reference, label_aware_contrastive, mec_loss, supcon_loss

L1E = math.log(1 + math.exp(-1))  # -log(e / (e + 1)) = 0.3132617


def t(*rows):
    return torch.tensor(rows, dtype=torch.float32)


def test_info_nce_hand_values() -> None:
    # logits [1, 0] / 1 -> -log(e / (e + 1))
    assert float(info_nce(t([1, 0]), t([1, 0]), t([0, 1]), 1.0)) == pytest.approx(L1E, abs=1e-6)
    # logits [1, -1] / 0.5 = [2, -2] -> log(1 + e^-4) = 0.0181499
    assert float(info_nce(t([1, 0]), t([1, 0]), t([-1, 0]), 0.5)) == pytest.approx(0.0181499, abs=1e-6)
    # two queries averaged: second has logits [0, 1] -> log(1 + e)
    got = info_nce(t([1, 0], [0, 1]), t([1, 0], [1, 0]), t([0, 1]), 1.0)
    assert float(got) == pytest.approx((L1E + math.log(1 + math.e)) / 2, abs=1e-6)


def test_info_nce_empty_and_empty_queue() -> None:
    assert float(info_nce(torch.zeros(0, 2), torch.zeros(0, 2), t([0, 1]), 0.1)) == 0.0
    assert float(info_nce(t([1, 0]), t([1, 0]), torch.zeros(0, 2), 0.1)) == pytest.approx(0.0, abs=1e-7)


def _unit_rows(g: torch.Generator, n: int, dim: int = 5) -> torch.Tensor:
    """``[n, dim]`` random float64 rows of unit length."""
    return torch.nn.functional.normalize(torch.randn(n, dim, generator=g, dtype=torch.float64), dim=-1)


@pytest.mark.parametrize("chunk", [1 << 21, 22])  # one chunk; 2 rows a chunk (11 negatives)
def test_info_nce_fused_matches_textbook_form_in_value_and_gradient(chunk: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_QueueInfoNCE, "CHUNK_ELEMENTS", chunk)
    g = torch.Generator().manual_seed(0)
    q, k, queue = _unit_rows(g, 7).requires_grad_(), _unit_rows(g, 7).requires_grad_(), _unit_rows(g, 11)
    got, want = info_nce(q, k, queue, 0.07), info_nce_reference(q, k, queue, 0.07)
    assert float(got.detach()) == pytest.approx(float(want.detach()), rel=1e-12)
    gq, gk = torch.autograd.grad(got, (q, k))
    wq, wk = torch.autograd.grad(want, (q, k))
    assert torch.allclose(gq, wq, atol=1e-12) and torch.allclose(gk, wk, atol=1e-12)
    assert torch.autograd.gradcheck(lambda a, b: info_nce(a, b, queue, 0.5), (q, k))


def test_info_nce_under_bf16_autocast_stays_close_to_float32() -> None:
    g = torch.Generator().manual_seed(1)
    q = torch.nn.functional.normalize(torch.randn(40, 16, generator=g), dim=-1).requires_grad_()
    k = torch.nn.functional.normalize(q.detach() + 0.3 * torch.randn(40, 16, generator=g), dim=-1)
    queue = torch.nn.functional.normalize(torch.randn(300, 16, generator=g), dim=-1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = info_nce(q, k, queue, 0.07)
    full = info_nce(q, k, queue, 0.07)
    assert low.dtype == torch.float32
    assert float(low.detach()) != float(full.detach())  # the bf16 path ran
    assert float(low.detach()) == pytest.approx(float(full.detach()), rel=2e-3)
    (g_low,), (g_full,) = torch.autograd.grad(low, q), torch.autograd.grad(full, q)
    assert float((g_low - g_full).norm() / g_full.norm()) < 1e-2


def test_info_nce_refuses_a_queue_that_wants_a_gradient() -> None:
    with pytest.raises(ValueError, match="queue"):
        info_nce(t([1, 0]), t([1, 0]), t([0, 1]).requires_grad_(), 1.0)


def test_mec_loss_pairs_and_validity() -> None:
    q = {"text": t([1, 0]), "audio": t([1, 0])}
    k = {"text": t([1, 0]), "audio": t([1, 0])}
    queues = {"text": t([0, 1]), "audio": t([0, 1])}
    valid = {"text": torch.tensor([True]), "audio": torch.tensor([True])}
    loss, n = mec_loss(q, k, queues, valid, 1.0)
    assert n == 1 and float(loss) == pytest.approx(L1E, abs=1e-6)  # only T->A' exists
    loss, n = mec_loss(q, k, queues, {"text": torch.tensor([True]), "audio": torch.tensor([False])}, 1.0)
    assert n == 0 and float(loss) == 0.0


def test_mec_loss_is_the_sum_of_the_three_terms_of_eq5() -> None:
    # T->A': logits [1, 0] -> log(1 + e^-1); A->V' and T->V': logits [1, -1] -> log(1 + e^-2) each
    q = {"text": t([1, 0]), "audio": t([1, 0]), "video": t([1, 0])}
    k = {"text": t([0, 1]), "audio": t([1, 0]), "video": t([1, 0])}
    queues = {"text": t([1, 0]), "audio": t([0, 1]), "video": t([-1, 0])}
    valid = {m: torch.tensor([True]) for m in q}
    loss, n = mec_loss(q, k, queues, valid, 1.0)
    assert n == 3
    assert float(loss) == pytest.approx(L1E + 2 * math.log(1 + math.exp(-2)), abs=1e-6)  # a sum, not a mean


def test_info_nce_leaves_a_querys_own_earlier_keys_out_of_its_negatives() -> None:
    # the queue holds utterance 7's own earlier key [1, 0] and utterance 3's key [0, 1]
    queue, queue_ids = t([1, 0], [0, 1]), torch.tensor([7, 3])
    q, k = t([1, 0]), t([1, 0])
    # with its own key as a negative: logits [1, 1, 0] -> -log(e / (2e + 1)) = log(2 + e^-1)
    assert float(info_nce(q, k, queue, 1.0)) == pytest.approx(math.log(2 + math.exp(-1)), abs=1e-6)
    # without it: logits [1, 0] -> log(1 + e^-1)
    assert float(info_nce(q, k, queue, 1.0, torch.tensor([7]), queue_ids)) == pytest.approx(L1E, abs=1e-6)
    # every queued key its own: only the positive is left, loss 0
    assert float(info_nce(q, k, queue, 1.0, torch.tensor([7]), torch.tensor([7, 7]))) == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(ValueError, match="both"):
        info_nce(q, k, queue, 1.0, torch.tensor([7]))


def test_mec_loss_masks_own_keys_per_row() -> None:
    # rows 0 and 1 (utterances 10, 11), T->A' only; queue_a holds utterance 10's key [1, 0] and a stranger's [0, 1]
    q = {"text": t([1, 0], [0, 1]), "audio": t([1, 0], [0, 1])}
    k = {"text": t([1, 0], [0, 1]), "audio": t([1, 0], [0, 1])}
    queues = {"text": t([0, 1], [0, 1]), "audio": t([1, 0], [0, 1])}
    queue_ids = {"text": torch.tensor([-1, -1]), "audio": torch.tensor([10, 99])}
    valid = {m: torch.tensor([True, True]) for m in q}
    loss, n = mec_loss(q, k, queues, valid, 1.0, ids=torch.tensor([10, 11]), queue_ids=queue_ids)
    # row 0 (utterance 10): its own [1, 0] is dropped, logits [1, 0] -> log(1 + e^-1)
    # row 1 (utterance 11): logits [1, 0, 1] -> -log(e / (2e + 1)) = log(2 + e^-1)
    assert n == 1 and float(loss) == pytest.approx((L1E + math.log(2 + math.exp(-1))) / 2, abs=1e-6)


def test_own_pairs_are_exactly_the_equal_ids() -> None:
    g = torch.Generator().manual_seed(5)
    q_ids = torch.randint(-1, 6, (9,), generator=g)  # repeats and -1 (an empty queue slot's id) included
    queue_ids = torch.randint(-1, 6, (40,), generator=g)
    rows, pos = _own_pairs(q_ids, queue_ids)
    want = (q_ids[:, None] == queue_ids[None, :]).nonzero()
    assert sorted(zip(rows.tolist(), pos.tolist())) == sorted(map(tuple, want.tolist()))
    assert torch.equal(rows, rows.sort().values)  # ascending: the chunks find theirs by searchsorted
    none = _own_pairs(torch.tensor([7, 8]), queue_ids)
    assert none[0].numel() == 0 and none[1].numel() == 0


@pytest.mark.parametrize("chunk", [1 << 21, 22])
def test_info_nce_own_key_masking_matches_textbook_form(chunk: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_QueueInfoNCE, "CHUNK_ELEMENTS", chunk)
    g = torch.Generator().manual_seed(3)
    q, k, queue = _unit_rows(g, 7).requires_grad_(), _unit_rows(g, 7).requires_grad_(), _unit_rows(g, 11)
    q_ids, queue_ids = torch.arange(7), torch.randint(0, 7, (11,), generator=g)
    got, want = info_nce(q, k, queue, 0.07, q_ids, queue_ids), info_nce_reference(q, k, queue, 0.07, q_ids, queue_ids)
    assert float(got.detach()) == pytest.approx(float(want.detach()), rel=1e-12)
    assert float(got.detach()) != pytest.approx(float(info_nce(q, k, queue, 0.07).detach()), rel=1e-6)
    for a, b in zip(torch.autograd.grad(got, (q, k)), torch.autograd.grad(want, (q, k))):
        assert torch.allclose(a, b, atol=1e-12)


def test_supcon_hand_value() -> None:
    # anchors 0 and 1: positive similarity 1, negative 0 -> -log(e / (e + 1)); anchor 2 has no positive
    feats = t([1, 0], [2, 0], [0, 3])  # normalised inside
    assert float(supcon_loss(feats, torch.tensor([0, 0, 1]), 1.0)) == pytest.approx(L1E, abs=1e-6)
    # temperature 0.5: -log(e^2 / (e^2 + 1))
    assert float(supcon_loss(feats, torch.tensor([0, 0, 1]), 0.5)) == pytest.approx(math.log(1 + math.exp(-2)), abs=1e-6)


def test_supcon_edge_cases() -> None:
    assert float(supcon_loss(t([1, 0], [0, 1]), torch.tensor([0, 1]), 0.1)) == 0.0  # no positives
    assert float(supcon_loss(t([1, 0]), torch.tensor([0]), 0.1)) == 0.0  # one sample
    assert float(supcon_loss(torch.zeros(0, 2), torch.zeros(0, dtype=torch.long), 0.1)) == 0.0


def test_label_aware_contrastive_diagonal_is_not_a_positive() -> None:
    # every label distinct: the matching pair (the diagonal) is the only same-label column, and the
    # paper leaves it out, so no row has a positive and the loss is 0 however a and b align
    a, b = t([1, 0], [0, 1]), t([1, 0], [0, 1])
    assert float(label_aware_contrastive(a, b, torch.tensor([0, 1]), 1.0)) == 0.0
    assert float(label_aware_contrastive(a, -b, torch.tensor([0, 1]), 1.0)) == 0.0


def test_label_aware_contrastive_hand_values() -> None:
    # rows are a (anchors), columns b. labels [0, 0, 1]: s = a b^T = [[1, 0, 1], [1, 0, 1], [0, 1, 0]]
    a, b, y = t([1, 0], [1, 0], [0, 1]), t([1, 0], [0, 1], [1, 0]), torch.tensor([0, 0, 1])
    # row 0: positive s01 = 0, negative s02 = 1 -> log(1 + e); row 1: s10 = 1 vs s12 = 1 -> log 2;
    # row 2 has no positive (its only same-label column is the diagonal) and is left out
    want = (math.log(1 + math.e) + math.log(2)) / 2
    assert float(label_aware_contrastive(a, b, y, 1.0)) == pytest.approx(want, abs=1e-6)
    # temperature 0.5 (the default) doubles the logits: row 0 -> log(1 + e^2), row 1 -> log 2
    want = (math.log(1 + math.exp(2)) + math.log(2)) / 2
    assert float(label_aware_contrastive(a, b, y)) == pytest.approx(want, abs=1e-6)
    # one direction: swapping the roles of a and b is another loss
    assert float(label_aware_contrastive(b, a, y, 1.0)) != pytest.approx(float(label_aware_contrastive(a, b, y, 1.0)))


def test_label_aware_contrastive_each_positive_against_the_negatives_only() -> None:
    # labels [0, 0, 0, 1]; s rows 0-2 = [1, 1, 0, 0]. Row 0: positives 1 (s 1) and 2 (s 0), negative 3 (s 0):
    # (-log(e / (e + 1)) - log(1 / (1 + 1))) / 2; the other positive is not in a positive's denominator
    a = t([1, 0], [1, 0], [1, 0], [0, 1])
    b = t([1, 0], [1, 0], [0, 1], [0, 1])
    row01 = (L1E + math.log(2)) / 2  # rows 0 and 1
    row2 = L1E  # row 2: positives 0 and 1 (s 1 each), negative 3 (s 0)
    want = (2 * row01 + row2) / 3  # row 3 has no positive
    assert float(label_aware_contrastive(a, b, torch.tensor([0, 0, 0, 1]), 1.0)) == pytest.approx(want, abs=1e-6)


def test_label_aware_contrastive_empty_and_grad() -> None:
    assert float(label_aware_contrastive(torch.zeros(0, 2), torch.zeros(0, 2), torch.zeros(0, dtype=torch.long))) == 0.0
    a = torch.randn(4, 3, requires_grad=True)
    label_aware_contrastive(a, torch.randn(4, 3), torch.tensor([0, 1, 0, 2])).backward()
    assert a.grad is not None and torch.isfinite(a.grad).all() and a.grad.abs().sum() > 0
    # one label for all: no negatives, every term is -log(1) = 0, and the gradient stays finite
    a = torch.randn(3, 3, requires_grad=True)
    loss = label_aware_contrastive(a, torch.randn(3, 3), torch.tensor([1, 1, 1]))
    loss.backward()
    assert float(loss.detach()) == pytest.approx(0.0, abs=1e-6) and torch.isfinite(a.grad).all()
