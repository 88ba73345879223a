"""`--with-embeddings`: each head names the module whose input is its utterance representation; reading
it through a forward pre-hook leaves the logits unchanged and gives one vector per real utterance."""

from __future__ import annotations

import pytest
import torch

from erc.train.inference import capture_representation, gather_representation
from tests.test_heads_shapes import CASES, make



@pytest.mark.parametrize("name,variant", CASES)
def test_reading_the_representation_leaves_the_logits_unchanged(name: str, variant: str) -> None:
    torch.manual_seed(0)
    head, batch = make(name, variant)
    head.eval()
    with torch.no_grad():
        plain = head(batch).logits
        with capture_representation(head) as seen:
            hooked = head(batch).logits
    assert torch.equal(plain, hooked)
    rep = gather_representation(seen, batch.mask)
    assert rep.shape[0] == int(batch.mask.sum()) and rep.shape[1] > 0
    assert torch.isfinite(rep).all()
    n_seen = len(seen)
    with torch.no_grad():
        head(batch)
    assert len(seen) == n_seen  # the hook is gone after the context


def test_matav_representation_is_what_its_classifier_reads() -> None:
    torch.manual_seed(0)
    head, batch = make("matav")
    head.eval()
    with torch.no_grad(), capture_representation(head) as seen:
        logits = head(batch).logits
    rep = gather_representation(seen, batch.mask)  # [N, hidden]
    linear = head.classifier[-1]
    assert torch.allclose(linear(rep), logits[batch.mask], atol=1e-6)


def test_a_representation_of_the_wrong_shape_is_refused() -> None:
    mask = torch.tensor([[True, True, False]])
    with pytest.raises(ValueError, match="fits neither"):
        gather_representation([torch.zeros(5, 4)], mask)
