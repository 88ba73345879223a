"""Building blocks: the per-speaker GRU's grouping, attention pooling, the dialogue GRU."""

from __future__ import annotations

import torch

from erc.heads.blocks import AttentionPool, DialogueGRU, PartyGRU


def test_party_gru_runs_each_speaker_over_their_own_turns() -> None:
    torch.manual_seed(3)
    party = PartyGRU(4, 3).eval()
    x = torch.randn(2, 6, 4)
    mask = torch.tensor([[1, 1, 1, 1, 1, 0], [1, 1, 1, 0, 0, 0]], dtype=torch.bool)
    speakers = torch.tensor([[0, 1, 0, 0, 1, 0], [1, 1, 0, 0, 0, 0]])
    out = party(x, mask, speakers)
    assert out.shape == (2, 6, 6) and torch.equal(out[0, 5], torch.zeros(6)) and torch.equal(out[1, 3:], torch.zeros(3, 6))
    gru: DialogueGRU = party.gru
    for b, positions in [(0, [0, 2, 3]), (0, [1, 4]), (1, [0, 1]), (1, [2])]:
        seq = x[b, positions].unsqueeze(0)
        alone = gru(seq, torch.ones(1, len(positions), dtype=torch.bool))[0]
        assert torch.allclose(out[b, positions], alone, atol=1e-6)


def test_attention_pool_ignores_padding_and_gives_zeros_without_frames() -> None:
    torch.manual_seed(4)
    pool = AttentionPool(5, 7)
    x = torch.randn(3, 4, 5)
    mask = torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]], dtype=torch.bool)
    out = pool(x, mask)
    noisy = x.clone()
    noisy[~mask] = 1e3  # padding frames changed: real outputs must not move
    assert torch.allclose(pool(noisy, mask), out)
    assert torch.allclose(out[1], x[1, 0])  # one real frame: its own vector
    assert torch.equal(out[2], torch.zeros(5))
    w = pool.score(x[0, :2]).squeeze(-1).softmax(-1)
    assert torch.allclose(out[0], (w[:, None] * x[0, :2]).sum(0), atol=1e-6)


def test_fusion_layer_with_one_token_equals_the_general_path() -> None:
    from erc.heads.blocks import FusionLayer

    torch.manual_seed(5)
    layer = FusionLayer(8, 2, 0.0, 1).eval()
    x = torch.randn(6, 1, 8)
    kpm = torch.zeros(6, 1, dtype=torch.bool)
    fast = layer(x, kpm)
    # the general path on two tokens where the second is masked as a key gives the first token's output
    general = layer(torch.cat([x, torch.randn(6, 1, 8)], dim=1), torch.tensor([[False, True]] * 6))[:, :1]
    assert torch.allclose(fast, general, atol=1e-6)
