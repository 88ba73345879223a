"""Hand-built :class:`DialogueBatch` objects for head tests (reusable by other test files)."""

from __future__ import annotations

import torch

from erc.heads.base import DialogueBatch


def random_batch(B: int = 3, L: int = 5, dims: dict[str, int] | None = None,
                 frame_dims: dict[str, int] | None = None, n_classes: int = 4, seed: int = 0,
                 T: int = 6, absent: float = 0.15, frame_tokens: dict[str, int] | None = None) -> DialogueBatch:
    """A random batch of B dialogues padded to L utterances.

    The first dialogue is full length, the others are shorter; each modality is absent for about
    ``absent`` of the real utterances (zeros + present False, and no frames). Frame sequences have
    random real lengths in 1..T (right padded with zeros); a modality of ``frame_tokens`` K has
    lengths that are multiples of K (whole frames of K tokens) in K..T.
    """
    dims = dims or {"text": 8, "audio": 6, "video": 5}
    frame_dims = frame_dims or {}
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, L + 1, (B,), generator=g)
    lengths[0] = L
    mask = torch.arange(L)[None, :] < lengths[:, None]
    labels = torch.randint(0, n_classes, (B, L), generator=g).masked_fill(~mask, -100)
    speakers = torch.randint(0, 2, (B, L), generator=g) * mask
    pooled, present, frames, frame_mask = {}, {}, {}, {}
    for m, d in dims.items():
        pres = (torch.rand(B, L, generator=g) >= absent) & mask
        present[m] = pres
        pooled[m] = torch.randn(B, L, d, generator=g) * pres.unsqueeze(-1)
    for m, f in frame_dims.items():
        pres = present.get(m)
        if pres is None:
            pres = (torch.rand(B, L, generator=g) >= absent) & mask
            present[m] = pres
        k = (frame_tokens or {}).get(m, 1)
        n = torch.randint(1, T // k + 1, (B, L), generator=g) * k * pres
        fm = torch.arange(T)[None, None, :] < n[..., None]
        frame_mask[m] = fm
        frames[m] = torch.randn(B, L, T, f, generator=g) * fm.unsqueeze(-1)
    index = torch.arange(B * L).view(B, L).masked_fill(~mask, -1)
    return DialogueBatch(mask=mask, labels=labels, speakers=speakers, pooled=pooled, present=present,
                         frames=frames, frame_mask=frame_mask, index=index)


def _pad(x: torch.Tensor, extra_b: int, extra_l: int, extra_t: int = 0, frames: bool = False,
         value: int = 0) -> torch.Tensor:
    B, L = x.shape[:2]
    shape = [B + extra_b, L + extra_l, *x.shape[2:]]
    if frames:
        shape[2] += extra_t
    out = torch.full(shape, value, dtype=x.dtype)
    out[(slice(0, B), slice(0, L), *(slice(0, s) for s in x.shape[2:]))] = x
    return out


def pad_batch(batch: DialogueBatch, extra_b: int = 1, extra_l: int = 2, extra_t: int = 3,
              fill: DialogueBatch | None = None) -> DialogueBatch:
    """The same dialogues with ``extra_l`` more padded utterances, ``extra_t`` more padded frames,
    and ``extra_b`` extra dialogues appended (taken from ``fill`` when given, else all padding).
    Real positions keep their indices ``[:B, :L]``."""
    B, L = batch.mask.shape
    out = DialogueBatch(
        mask=_pad(batch.mask, extra_b, extra_l), labels=_pad(batch.labels, extra_b, extra_l, value=-100),
        speakers=_pad(batch.speakers, extra_b, extra_l),
        pooled={m: _pad(v, extra_b, extra_l) for m, v in batch.pooled.items()},
        present={m: _pad(v, extra_b, extra_l) for m, v in batch.present.items()},
        frames={m: _pad(v, extra_b, extra_l, extra_t, True) for m, v in batch.frames.items()},
        frame_mask={m: _pad(v, extra_b, extra_l, extra_t, True) for m, v in batch.frame_mask.items()},
        index=None if batch.index is None else _pad(batch.index, extra_b, extra_l, value=-1),
    )
    if fill is not None and extra_b > 0:
        lf = min(fill.mask.shape[1], L + extra_l)
        out.mask[B:, :lf] = fill.mask[:extra_b, :lf]
        out.labels[B:, :lf] = fill.labels[:extra_b, :lf]
        for m in out.pooled:
            out.pooled[m][B:, :lf] = fill.pooled[m][:extra_b, :lf]
            out.present[m][B:, :lf] = fill.present[m][:extra_b, :lf]
        for m in out.frames:
            tf = min(fill.frames[m].shape[2], out.frames[m].shape[2])
            out.frames[m][B:, :lf, :tf] = fill.frames[m][:extra_b, :lf, :tf]
            out.frame_mask[m][B:, :lf, :tf] = fill.frame_mask[m][:extra_b, :lf, :tf]
    return out
