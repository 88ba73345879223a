"""Padding (more utterances, more frames, an extra dialogue) never changes real outputs (eval)."""

from __future__ import annotations

import pytest
import torch

from tests.batches import pad_batch, random_batch
from tests.test_heads_shapes import CASES, DIMS, FRAME_DIMS, make



@pytest.mark.parametrize("name,variant", CASES)
def test_padding_invariance(name: str, variant: str) -> None:
    torch.manual_seed(0)
    head, batch = make(name, variant)
    head.eval()
    other = random_batch(2, 7, DIMS, FRAME_DIMS.get(name, {}), 4, seed=5)
    with torch.no_grad():
        ref = head(batch).logits
        padded = head(pad_batch(batch, extra_b=2, extra_l=2, extra_t=3, fill=other)).logits
    m = batch.mask
    torch.testing.assert_close(padded[:3, :5][m], ref[m], atol=1e-5, rtol=1e-4)


def test_matav_bidirectional_padding() -> None:
    torch.manual_seed(0)
    head, batch = make("matav", extra={"bidirectional": "true"})
    head.eval()
    with torch.no_grad():
        ref = head(batch).logits
        padded = head(pad_batch(batch, extra_b=1, extra_l=3)).logits
    torch.testing.assert_close(padded[:3, :5][batch.mask], ref[batch.mask], atol=1e-5, rtol=1e-4)
