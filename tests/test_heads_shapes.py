"""Every head and every variant builds from HeadInputs, returns logits [B, L, C], and trains a step."""

from __future__ import annotations

import pytest
import torch

from tests.batches import random_batch
from erc.errors import UserError
from erc.heads import HEADS, HeadInputs, build_head, get_head

DIMS = {"text": 8, "audio": 6, "video": 5}
FRAME_DIMS = {"jfm": {"text": 7, "audio": 4}, "deepmsi": {"video": 5}}
FRAME_TOKENS = {"deepmsi": {"video": 3}}  # deepmsi reads 3 patch tokens a video frame
TINY = {
    "matav": {"dim": 16, "hidden": 16, "queue_size": 32, "fusion_layers": 2, "fusion_heads": 2,
              "mamba_layers": 1},
    "jfm": {"text_model": "", "audio_model": "", "layer_dim": 16, "layer_heads": 2, "layer_ff": 32,
            "extractor_dim": 16, "extractor_heads": 2, "extractor_ff": 32, "extractor_layers": 1,
            "patch_len": 2, "patch_bins": 2},
    "deepmsi": {"dim": 16, "hidden": 16},
    "mlp": {"hidden": 16},
    "gru": {"hidden": 8, "proj": 16},
}
CASES = [(name, v) for name in HEADS for v in get_head(name).variants]


def make(name: str, variant: str = "full", dims=DIMS, extra: dict | None = None):
    frame_dims, tokens = FRAME_DIMS.get(name, {}), FRAME_TOKENS.get(name, {})
    head = build_head(name, HeadInputs(dict(dims), dict(frame_dims), 4, dict(tokens)), {**TINY[name], **(extra or {})}, variant)
    return head, random_batch(3, 5, dims, frame_dims, 4, seed=0, frame_tokens=tokens)


@pytest.mark.parametrize("name,variant", CASES)
def test_variant_forward_and_step(name: str, variant: str) -> None:
    torch.manual_seed(0)
    head, batch = make(name, variant)
    head.train()
    out = head(batch)
    assert out.logits.shape == (3, 5, 4)
    assert torch.isfinite(out.logits).all() and torch.isfinite(out.aux_loss)
    before = [p.detach().clone() for p in head.parameters()]
    opt = torch.optim.SGD([p for p in head.parameters() if p.requires_grad], lr=0.1)
    loss = torch.nn.functional.cross_entropy(out.logits[batch.mask], batch.labels[batch.mask]) + out.aux_loss
    opt.zero_grad()
    loss.backward()
    opt.step()
    head.after_step()
    changed = sum(not torch.equal(a, p) for a, p in zip(before, head.parameters()))
    assert changed > 0


@pytest.mark.parametrize("name", ["matav", "mlp", "gru", "deepmsi"])
@pytest.mark.parametrize("mods", [("text",), ("audio", "video"), ("text", "audio", "video")])
def test_modality_subsets(name: str, mods: tuple[str, ...]) -> None:
    dims = {m: DIMS[m] for m in mods}
    if name == "deepmsi" and "video" not in mods:  # Table 3's T and A rows: no frame path
        head = build_head(name, HeadInputs(dims, {}, 4), TINY[name])
        batch = random_batch(3, 5, dims, {}, 4, seed=0)
    else:
        head, batch = make(name, dims=dims)
    head.train()
    out = head(batch)
    assert out.logits.shape == (3, 5, 4) and torch.isfinite(out.aux_loss)


@pytest.mark.parametrize("mods", [("text",), ("audio",)])
def test_jfm_single_stream(mods: tuple[str, ...]) -> None:
    frame_dims = {m: FRAME_DIMS["jfm"][m] for m in mods}
    head = build_head("jfm", HeadInputs({}, frame_dims, 4), TINY["jfm"])
    assert get_head("jfm").frames_for(head.config, list(mods)) == list(mods)
    out = head(random_batch(2, 4, {}, frame_dims, 4, seed=1))
    assert out.logits.shape == (2, 4, 4)


def test_registry_errors() -> None:
    with pytest.raises(UserError, match="matav"):
        get_head("nope")
    with pytest.raises(UserError):
        build_head("matav", HeadInputs(DIMS, {}, 4), {}, "no-such-variant")
    with pytest.raises(UserError):
        build_head("matav", HeadInputs(DIMS, {}, 4), {"no_such_key": "1"})
    head = build_head("matav", HeadInputs(DIMS, {}, 4), {**TINY["matav"], "use_mec": "false"}, "no-mamba")
    assert not head.config.use_mamba and not head.config.use_mec and head.backend == "none"


def test_matav_mamba_backend_on_cpu_names_the_scan(monkeypatch: pytest.MonkeyPatch) -> None:
    from erc.heads.cpu import scan_kernel as cscan

    head, batch = make("matav")
    head(batch)
    assert head.backend == ("torch+c-scan" if cscan.available() else "torch")
    monkeypatch.setenv("ERC_CPU_KERNELS", "attention")  # every kernel but the scan
    head(batch)
    assert head.backend == "torch"
