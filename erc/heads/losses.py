"""Contrastive losses shared by the heads.

- :func:`info_nce` / :func:`mec_loss`: MoCo-style InfoNCE against a queue of momentum keys
  (MaTAV's multimodal emotion contrastive loss, T->A', A->V', T->V').
- :func:`supcon_loss`: supervised contrastive loss (Khosla et al., 2020) — JFM's ICL.
- :func:`label_aware_contrastive`: cross-modal, label-aware contrastive loss — DeepMSI-MER.

Callers drop padding / unlabeled rows (label -100) and absent modalities before calling.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def _zero(like: torch.Tensor) -> torch.Tensor:
    return like.sum() * 0.0


def _own_pairs(q_ids: torch.Tensor, queue_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Every (row, queue position) with ``queue_ids[pos] == q_ids[row]``, rows ascending.

    q_ids ``[N]``, queue_ids ``[M]`` (long) -> (rows ``[P]``, positions ``[P]``). Found through the
    sorted queue ids (``O((N + M) log M)``) instead of an ``[N, M]`` comparison: a query matches a
    handful of the M keys at most (its own keys from earlier steps).
    """
    sorted_ids, order = queue_ids.sort()
    lo = torch.searchsorted(sorted_ids, q_ids)
    counts = torch.searchsorted(sorted_ids, q_ids, right=True) - lo  # [N] matches per row
    rows = torch.repeat_interleave(torch.arange(q_ids.shape[0], device=q_ids.device), counts)  # [P]
    first = torch.cumsum(counts, 0) - counts  # [N] each row's first pair
    at = torch.arange(rows.shape[0], device=q_ids.device) - first[rows] + lo[rows]  # [P] index into sorted_ids
    return rows, order[at]


class _QueueInfoNCE(torch.autograd.Function):
    """InfoNCE against a constant queue with a hand-written backward (see :func:`info_nce`).

    The ``[N, 1 + M]`` logits are never concatenated and rows go in chunks of ``CHUNK_ELEMENTS``
    logits: on CPU the generic ``cat`` + ``cross_entropy`` path spent more time in fresh
    ``[N, M]`` temporaries than in the ``[N, D] x [D, M]`` matmul itself. Per chunk the forward
    keeps the unnormalised softmax numerators ``e = exp(logit - top)`` (in place, in the matmul's
    dtype) and the backward is one matmul, ``(e @ queue) / total``: the division by each row's
    total is done on the ``[n, D]`` product rather than on the ``[n, M]`` numerators.
    """

    CHUNK_ELEMENTS = 1 << 21  # logits per chunk (8 MB in float32)

    @staticmethod
    def forward(ctx, q: torch.Tensor, k_pos: torch.Tensor, queue: torch.Tensor, temperature: float,  # noqa: ANN001
                matmul_dtype: torch.dtype | None = None, q_ids: torch.Tensor | None = None,
                queue_ids: torch.Tensor | None = None) -> torch.Tensor:
        qs = q / temperature  # [N, D]
        pos = (qs * k_pos).sum(-1)  # [N]
        rows = max(1, _QueueInfoNCE.CHUNK_ELEMENTS // max(queue.shape[0], 1))
        mm = matmul_dtype or q.dtype
        queue_mm = queue.to(mm)
        own = _own_pairs(q_ids, queue_ids) if q_ids is not None and queue_ids is not None else None
        numerators, tops, sums = [], [], []
        for c, (qc, pc) in enumerate(zip(qs.split(rows), pos.split(rows))):
            neg = qc.to(mm) @ queue_mm.t()  # [n, M] logits of the negatives
            if own is not None:  # a query's own earlier keys are no negatives: exp(-inf) = 0, no gradient
                r, k = own
                lo, hi = torch.searchsorted(r, torch.tensor([c * rows, (c + 1) * rows], device=r.device))
                neg[r[lo:hi] - c * rows, k[lo:hi]] = float("-inf")
            top = torch.maximum(pc, neg.amax(-1).to(pc.dtype)) if neg.shape[1] else pc  # [n] (-inf rows: pc)
            top = top.to(mm).to(pc.dtype)  # representable in the numerators' dtype: subtracted exactly below
            neg.sub_(top[:, None].to(mm)).exp_()  # unnormalised softmax numerators, in place
            numerators.append(neg)
            tops.append(top)
            sums.append(neg.sum(-1, dtype=pc.dtype))
        top, neg_sum = torch.cat(tops), torch.cat(sums)
        p_pos = (pos - top).exp()  # [N]
        total = neg_sum + p_pos  # [N]
        loss = (total.log() + top - pos).mean()
        ctx.temperature, ctx.rows = temperature, rows
        ctx.numerators = numerators
        ctx.save_for_backward(qs, k_pos, queue_mm, p_pos, total)
        return loss

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor):  # noqa: ANN001, ANN205
        qs, k_pos, queue, p_pos, total = ctx.saved_tensors
        scale = grad / qs.shape[0]
        # d loss_i / d logit_ij = softmax_ij - [j == positive]
        w_pos = (p_pos / total - 1.0)[:, None]  # [N, 1]
        grad_q = grad_k = None
        if ctx.needs_input_grad[0]:
            d_qs = w_pos * k_pos  # [N, D]
            for e, dc, tc in zip(ctx.numerators, d_qs.split(ctx.rows), total.split(ctx.rows)):
                dc.addcdiv_((e @ queue).to(dc.dtype), tc[:, None])  # softmax over the negatives @ queue
            grad_q = d_qs * (scale / ctx.temperature)
        if ctx.needs_input_grad[1]:
            grad_k = w_pos * qs * scale
        return grad_q, grad_k, None, None, None, None, None


def info_nce(q: torch.Tensor, k_pos: torch.Tensor, queue: torch.Tensor, temperature: float,
             q_ids: torch.Tensor | None = None, queue_ids: torch.Tensor | None = None) -> torch.Tensor:
    """MoCo InfoNCE: each query's positive is its matching key, its negatives are the queue.

    q: ``[N, D]`` queries, k_pos: ``[N, D]`` positive keys, queue: ``[M, D]`` negative keys (M may
    be 0; constant: it receives no gradient, as in MoCo); all assumed L2-normalised. With
    ``q_ids [N]`` and ``queue_ids [M]`` (long; e.g. the utterance each key came from), queue entry
    m is no negative of query i where ``queue_ids[m] == q_ids[i]`` (the set Q_i below):

        loss = mean_i  -log( exp(q_i·k_i / τ) / (exp(q_i·k_i / τ) + Σ_{m ∉ Q_i} exp(q_i·queue_m / τ)) )

    Returns a scalar; 0 (with a graph to q) when N == 0. Computed by a fused function with a
    hand-written backward (checked against the ``cat`` + ``cross_entropy`` form in the tests).

    Precision: the positives, the softmax totals, log and loss are float32 (float64 for float64
    inputs). Under bf16 autocast the two ``[N, D] x [D, M]`` queue products take bf16 operands,
    like every other matmul of the step, and the ``[N, M]`` softmax numerators are kept in bf16
    (about 3x faster on this 2-core CPU: bf16 matmuls with AVX-512, half the memory traffic, no
    casts). Measured on clustered unit vectors (D 256, M 4096, τ 0.07, N 1500) against float32:
    loss within 4e-4 relative, gradient within 4e-3 relative (cosine > 0.99999), the size of
    bf16 rounding elsewhere in the step.
    """
    if q.shape[0] == 0:
        return _zero(q)
    if queue.requires_grad:
        raise ValueError("info_nce: the queue is a constant (momentum keys); it cannot take a gradient")
    if (q_ids is None) != (queue_ids is None):
        raise ValueError("info_nce: give both q_ids and queue_ids, or neither")
    dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
    dev = q.device.type
    low = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) and dtype == torch.float32 else None
    with torch.autocast(dev, enabled=False):
        return _QueueInfoNCE.apply(q.to(dtype), k_pos.to(dtype), queue.to(dtype), temperature, low, q_ids, queue_ids)


def info_nce_reference(q: torch.Tensor, k_pos: torch.Tensor, queue: torch.Tensor, temperature: float,
                       q_ids: torch.Tensor | None = None, queue_ids: torch.Tensor | None = None) -> torch.Tensor:
    """The textbook form of :func:`info_nce` (concatenated logits + cross-entropy), for the tests."""
    pos = (q * k_pos).sum(-1, keepdim=True)  # [N, 1]
    neg = q @ queue.t()  # [N, M]
    if q_ids is not None and queue_ids is not None:
        neg = neg.masked_fill(q_ids[:, None] == queue_ids[None, :], float("-inf"))
    logits = torch.cat([pos, neg], dim=1) / temperature
    target = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
    return F.cross_entropy(logits, target)


PAIRS = (("text", "audio"), ("audio", "video"), ("text", "video"))  # MaTAV's Eq. 5: T->A', A->V', T->V'


def mec_loss(q: dict[str, torch.Tensor], k: dict[str, torch.Tensor], queues: dict[str, torch.Tensor],
             valid: dict[str, torch.Tensor], temperature: float, pairs: tuple[tuple[str, str], ...] = PAIRS,
             ids: torch.Tensor | None = None, queue_ids: dict[str, torch.Tensor] | None = None,
             ) -> tuple[torch.Tensor, int]:
    """MaTAV's multimodal emotion contrastive loss, the paper's Eq. 5: the **sum** over the pairs
    (x, y) that can be formed of ``info_nce(q_x, k_y, queue_y)``, i.e.

        L_MEC = L(T->A') + L(A->V') + L(T->V')

    where ' is the momentum encoder (each term a mean over its rows).

    q, k: modality -> ``[N, D]`` online / momentum embeddings (L2-normalised);
    queues: modality -> ``[M_y, D]`` momentum queue;
    valid: modality -> ``[N]`` bool (present, real, labelled rows);
    ids: ``[N]`` long, the utterance of each row, with queue_ids: modality -> ``[M_y]`` long, the
    utterance each queued key came from: a row's own earlier keys are left out of its negatives.
    Only rows where both modalities of a pair are valid take part; a pair with no such row adds
    nothing. Returns (loss, pairs used).
    """
    losses = []
    for x, y in pairs:
        if x not in q or y not in k:
            continue
        both = valid[x] & valid[y]
        if not bool(both.any()):
            continue
        own = (ids[both], queue_ids[y]) if ids is not None and queue_ids is not None else (None, None)
        losses.append(info_nce(q[x][both], k[y][both], queues[y], temperature, *own))
    if not losses:
        return _zero(next(iter(q.values()))), 0
    return torch.stack(losses).sum(), len(losses)


def supcon_loss(features: torch.Tensor, labels: torch.Tensor, temperature: float) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al., 2020, L_out), features L2-normalised here.

    features: ``[N, D]``, labels: ``[N]``. With s_ij = z_i·z_j / τ, A(i) = {j ≠ i},
    P(i) = {j ≠ i : y_j = y_i}:

        loss = mean_{i : |P(i)| > 0}  -1/|P(i)| Σ_{p ∈ P(i)} log( exp(s_ip) / Σ_{a ∈ A(i)} exp(s_ia) )

    Anchors with no positive are skipped; returns 0 when no anchor is valid.
    """
    n = features.shape[0]
    if n < 2:
        return _zero(features)
    z = F.normalize(features, dim=-1)
    sim = z @ z.t() / temperature
    eye = torch.eye(n, dtype=torch.bool, device=z.device)
    log_prob = sim - torch.logsumexp(sim.masked_fill(eye, float("-inf")), dim=1, keepdim=True)
    pos = (labels[:, None] == labels[None, :]) & ~eye
    n_pos = pos.sum(1)
    keep = n_pos > 0
    if not bool(keep.any()):
        return _zero(features)
    per_anchor = -(log_prob * pos).sum(1)[keep] / n_pos[keep]
    return per_anchor.mean()


def label_aware_contrastive(a: torch.Tensor, b: torch.Tensor, labels: torch.Tensor,
                            temperature: float = 0.5) -> torch.Tensor:
    """Cross-modal label-aware contrastive loss, as DeepMSI-MER's Sec. 3.2 states it (Eq. 5).

    a: ``[N, D]`` anchors (the rows of the similarity matrix: DeepMSI's mapped video features),
    b: ``[N, D]`` the other modality of the same N utterances (the columns: mapped text or audio),
    both L2-normalised here; labels ``[N]``. With s_ij = a_i·b_j / τ, positives
    P(i) = {j ≠ i : y_j = y_i} and negatives Q(i) = {j : y_j ≠ y_i}:

        ℓ_i  = 1/|P(i)| Σ_{p ∈ P(i)} -log( exp(s_ip) / (exp(s_ip) + Σ_{q ∈ Q(i)} exp(s_iq)) )
        loss = mean over the rows i with |P(i)| > 0 of ℓ_i

    The paper, point by point: "the similarities of the negative samples in each row are
    accumulated and computed with the positive samples" -> each positive against the sum over the
    row's negatives (other positives are not in its denominator); "the loss values for each row are
    accumulated and divided by [the number of positives] (since the diagonal of the similarity
    matrix represents the self-similarity of samples with the same label, which should not be
    included in the loss computation)" -> the diagonal j = i is neither a positive nor a negative;
    "the final loss is obtained by averaging the loss values of all rows" -> the mean over rows (a
    row without positives has no term and is left out of the mean). One direction, rows = ``a``.
    Returns 0 (with a graph to a and b) when no row has a positive.
    """
    zero = _zero(a) + _zero(b)
    n = a.shape[0]
    if n < 2:
        return zero
    a = F.normalize(a, dim=-1)
    b = F.normalize(b, dim=-1)
    sim = a @ b.t() / temperature  # [N, N]
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(n, dtype=torch.bool, device=a.device)
    pos = same & ~eye
    neg = ~same
    # log(exp(s_ip) + Σ_q exp(s_iq)) for every (i, p): logaddexp of s_ip and the row's negative log-sum-exp
    neg_lse = torch.logsumexp(sim.masked_fill(~neg, float("-inf")), dim=1, keepdim=True)  # [N, 1]; -inf without negatives
    per_pair = torch.logaddexp(sim, neg_lse) - sim  # [N, N]: -log(exp(s_ij) / (exp(s_ij) + Σ_q exp(s_iq)))
    n_pos = pos.sum(1)
    rows = n_pos > 0
    if not bool(rows.any()):
        return zero
    per_row = per_pair.masked_fill(~pos, 0.0).sum(1)[rows] / n_pos[rows]
    return per_row.mean()
