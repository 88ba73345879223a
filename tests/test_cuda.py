"""The CUDA paths, checked where there is a GPU (marked ``gpu``; skipped cleanly without CUDA):
mamba-ssm's kernels against the PyTorch Mamba path, fp16 extraction against fp32 on the CPU, a
MaTAV run on the GPU recording which Mamba ran, and (where two GPUs exist) an extraction by two
torchrun ranks, one per GPU, against one CPU process."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from erc.corpus import Utterance
from erc.extract.encoders import build_encoder
from erc.heads.mamba import MambaBlock, mamba_ssm_available, torch_mixer_forward

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp(min=1e-12))


def test_mamba_ssm_kernels_match_the_torch_path_at_real_positions() -> None:
    if not mamba_ssm_available():
        pytest.skip("mamba-ssm is not installed (pip install -e '.[cuda]')")
    torch.manual_seed(0)
    block = MambaBlock(64, dropout=0.0).cuda()
    mixer = block.fwd
    B, L = 4, 37
    lengths = torch.tensor([37, 20, 5, 1])
    mask = (torch.arange(L)[None] < lengths[:, None]).cuda()  # [B, L], right padded
    x = torch.randn(B, L, 64, device="cuda") * mask[..., None]
    x_torch, x_ssm = x.clone().requires_grad_(), x.clone().requires_grad_()
    ref = torch_mixer_forward(mixer, x_torch, mask)
    fast = block._mamba_ssm(mixer)(x_ssm)  # the kernels run the padded batch: Mamba is causal
    real = mask[..., None].to(ref.dtype)
    assert _relative_error(fast * real, ref * real) < 1e-4
    w = torch.randn_like(ref) * real  # a loss on the real positions only
    g_ref = torch.autograd.grad((ref * w).sum(), [x_torch, *mixer.parameters()])
    g_ssm = torch.autograd.grad((fast * w).sum(), [x_ssm, *mixer.parameters()])
    names = ["x"] + [n for n, _ in mixer.named_parameters()]
    for name, a, b in zip(names, g_ssm, g_ref):
        assert _relative_error(a, b) < 1e-3, name


def test_fp16_text_extraction_on_cuda_matches_fp32_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    texts = ["Hello there, how are you doing today?", "Fine.", "Great! Really great news, my friend.", ""]
    dialogue = [Utterance(f"u{i}", "d0", i, "AB"[i % 2], t, "neu", "train") for i, t in enumerate(texts)]
    cpu, gpu = build_encoder("text", "minilm"), build_encoder("text", "minilm")
    cpu.load("cpu")
    gpu.load("cuda", fp16=True)
    assert gpu.fp16
    items = [cpu.prepare(dialogue, i) for i in range(len(dialogue))]
    for a, b in zip(cpu.encode(items), gpu.encode(items)):
        assert b.pooled.dtype == np.float32 and np.isfinite(b.pooled).all()
        cosine = float(a.pooled @ b.pooled / (np.linalg.norm(a.pooled) * np.linalg.norm(b.pooled)))
        assert cosine > 0.999
        assert b.frames.shape == a.frames.shape and np.isfinite(b.frames.astype(np.float32)).all()


def test_matav_trains_on_cuda_and_records_its_mamba_backend(tmp_path) -> None:
    from erc.train.config import TrainConfig
    from tests.train_utils import fit
    from tests.synth_cache import write_synthetic_cache

    cache = write_synthetic_cache(tmp_path / "c.h5", n_dialogues=12, lengths=(3, 8), seed=3)
    res = fit(cache, "matav", ["t", "a", "v"], {"queue_size": "64"}, "full",
                    TrainConfig(epochs=2, batch_size=4, device="cuda", quiet=True), tmp_path / "run")
    assert res.extra["mamba_backend"] == ["mamba-ssm" if mamba_ssm_available() else "torch"]
    assert np.isfinite(res.test["weighted_f1"])


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
def test_two_gpus_under_torchrun_write_the_cache_of_one_cpu_process(tmp_path) -> None:
    import json
    import os
    import subprocess
    import sys

    import h5py

    from erc.extract.datasets import load_dataset
    from erc.extract.run import RunConfig, extract
    from tests.cli_utils import ROOT

    words = "good bad happy sad angry calm fine terrible wonderful okay sure no yes maybe".split()
    rng = np.random.default_rng(0)
    rows = ["dialogue_id,utterance_id,turn,speaker,text,label,split"]
    rows += [f"d{i // 6},u{i},{i % 6},A,{' '.join(rng.choice(words, size=int(rng.integers(1, 20))))},x,train"
             for i in range(96)]
    manifest = tmp_path / "m.csv"
    manifest.write_text("\n".join(rows) + "\n")
    cpu, gpus = tmp_path / "cpu.h5", tmp_path / "gpus.h5"
    extract(load_dataset("manifest", manifest), [build_encoder("text", "minilm", {"batch_size": "8"})], cpu,
            RunConfig(device="cpu"), "cpu")
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                          "-m", "erc.cli", "extract", "--dataset", "manifest", "--root", str(manifest), "--text",
                          "minilm", "--audio", "none", "--video", "none", "--set", "text.batch_size=8",
                          "--device", "cuda", "--out", str(gpus), "--quiet"],
                         env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    with h5py.File(cpu) as a, h5py.File(gpus) as b:
        g = "features/text/minilm"
        pa, pb = a[f"{g}/pooled"][()], b[f"{g}/pooled"][()]
        cosine = (pa * pb).sum(1) / (np.linalg.norm(pa, axis=1) * np.linalg.norm(pb, axis=1))
        assert cosine.min() > 0.999  # fp16 on the GPUs against fp32 on the CPU
        for key in ("offsets", "present", "status"):
            np.testing.assert_array_equal(a[f"{g}/{key}"][()], b[f"{g}/{key}"][()])
        devices = json.loads(b[g].attrs["extraction"])["devices"]
    assert len(devices) == 2 and devices[0].startswith("cuda:0") and devices[1].startswith("cuda:1")
