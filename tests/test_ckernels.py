"""Building and loading the C kernels: cached builds, and a clean fallback to PyTorch (one warning)
when no kernel can be built."""

from __future__ import annotations

import warnings

import pytest
import torch

from erc.heads.cpu import attention as cattention
from erc.heads.cpu import build as ckernels
from erc.heads.cpu import dropout as cdropout
from erc.heads.cpu import scan as cscan
from erc.heads.cpu import softplus as csoftplus
from erc.heads.dropout import FastDropout


def test_a_build_is_cached_by_its_key(tmp_path, monkeypatch) -> None:
    if ckernels._compiler() is None:
        pytest.skip("no C compiler")
    monkeypatch.setenv("ERC_CACHE_DIR", str(tmp_path))
    ckernels.build("dropout", cdropout.FLAGS)
    (lib,) = (tmp_path / "kernels").glob("dropout-*.so")
    stamp = lib.stat().st_mtime_ns
    ckernels.build("dropout", cdropout.FLAGS)  # same source, flags, compiler, machine: reused
    assert lib.stat().st_mtime_ns == stamp
    ckernels.build("dropout", [*cdropout.FLAGS, "-DERC_TEST_FLAG"])  # other flags: another build
    assert len(list((tmp_path / "kernels").glob("dropout-*.so"))) == 2


def test_without_a_compiler_every_kernel_warns_once_and_pytorch_runs(monkeypatch) -> None:
    monkeypatch.setattr(ckernels, "_libs", {})
    monkeypatch.setattr(ckernels, "_compiler", lambda: None)
    with pytest.warns(RuntimeWarning, match="no C compiler"):
        assert not cdropout.available()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the second ask is silent
        assert not cdropout.available()
    with pytest.warns(RuntimeWarning, match="selective_scan"):
        assert not cscan.available()
    with pytest.warns(RuntimeWarning, match="token_attention"):
        assert not cattention.supports(torch.zeros(2, 3, 96), 4)
    with pytest.warns(RuntimeWarning, match="softplus"):
        assert not csoftplus.supports(torch.zeros(3))
    torch.manual_seed(0)
    y = FastDropout(0.5).train()(torch.ones(10_000))  # the PyTorch mask
    assert 0.45 < float((y == 0).float().mean()) < 0.55


def test_a_switched_off_kernel_is_not_built(monkeypatch) -> None:
    monkeypatch.setattr(ckernels, "_libs", {})
    monkeypatch.setenv("ERC_C_DROPOUT", "0")
    monkeypatch.setattr(ckernels, "build", lambda *a, **k: pytest.fail("built a switched-off kernel"))
    assert not cdropout.available()
