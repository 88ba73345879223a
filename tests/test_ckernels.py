"""Building and loading the C kernels: cached builds, the one switch (ERC_CPU_KERNELS), and a clean
fallback to PyTorch (one warning) when no kernel can be built."""

from __future__ import annotations

import os
import warnings

import pytest
import torch

from erc.heads import cpu
from erc.heads.cpu import attention as cattention
from erc.heads.cpu import build as ckernels
from erc.heads.cpu import scan_kernel as cscan


def test_a_build_is_cached_by_its_key(tmp_path, monkeypatch) -> None:
    if ckernels._compiler() is None:
        pytest.skip("no C compiler")
    monkeypatch.setenv("ERC_CACHE_DIR", str(tmp_path))
    ckernels.build("token_attention", cattention.FLAGS)
    (lib,) = (tmp_path / "kernels").glob("token_attention-*.so")
    stamp = lib.stat().st_mtime_ns
    ckernels.build("token_attention", cattention.FLAGS)  # same source, flags, compiler, machine: reused
    assert lib.stat().st_mtime_ns == stamp
    ckernels.build("token_attention", [*cattention.FLAGS, "-DERC_TEST_FLAG"])  # other flags: another build
    assert len(list((tmp_path / "kernels").glob("token_attention-*.so"))) == 2


def test_without_a_compiler_every_kernel_warns_once_and_pytorch_runs(monkeypatch) -> None:
    monkeypatch.setattr(ckernels, "_libs", {})
    monkeypatch.setattr(ckernels, "_compiler", lambda: None)
    with pytest.warns(RuntimeWarning, match="no C compiler"):
        assert not cscan.available()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the second ask is silent
        assert not cscan.available()
    with pytest.warns(RuntimeWarning, match="token_attention"):
        assert not cattention.supports(torch.zeros(2, 3, 96), 4)
    assert cpu.scan_backend(torch.zeros(3)) == "torch"
    assert cpu.loaded() == {"selective_scan": False, "token_attention": False}  # what runs record


@pytest.mark.parametrize("value, on", [("", {"scan", "attention"}), ("1", {"scan", "attention"}),
                                       ("0", set()), ("none", set()), ("scan", {"scan"}),
                                       ("attention, scan", {"scan", "attention"})])
def test_one_switch_selects_the_kernels(monkeypatch, value, on) -> None:
    monkeypatch.setenv("ERC_CPU_KERNELS", value)
    assert {k for k in cpu.KERNELS if cpu.enabled(k)} == on


def test_a_switched_off_kernel_is_not_built(monkeypatch) -> None:
    monkeypatch.setattr(ckernels, "_libs", {})
    monkeypatch.setenv("ERC_CPU_KERNELS", "0")
    monkeypatch.setattr(ckernels, "build", lambda *a, **k: pytest.fail("built a switched-off kernel"))
    assert not cscan.available()
    assert not cattention.supports(torch.zeros(2, 3, 96), 4)


def test_loading_a_kernel_leaves_denormal_floats_alone(tmp_path) -> None:
    """A kernel built with -ffast-math must not switch the process to flush-to-zero (gcc < 13 links
    crtfastmath.o into a -ffast-math shared library, whose constructor sets FTZ / DAZ when loaded):
    that changed every float operation after the first Mamba forward, so a run's numbers depended
    on whether an earlier run in the same process had loaded the kernel."""
    if ckernels._compiler() is None:
        pytest.skip("no C compiler")
    import subprocess
    import sys

    code = ("import torch\nfrom erc.heads.cpu import scan_kernel as scan\nx = torch.tensor([1e-40])\nbefore = (x * 2).item()\n"
            "assert scan.available()\nprint(before, (x * 2).item())")
    env = {**__import__("os").environ, "ERC_CACHE_DIR": str(tmp_path), "ERC_CPU_KERNELS": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300, check=True)
    before, after = map(float, out.stdout.split())
    assert before == pytest.approx(2e-40) and after == before


def test_a_kernel_cache_writable_by_other_users_is_refused_with_one_line(tmp_path, monkeypatch) -> None:
    from erc.errors import UserError

    if ckernels._compiler() is None:
        pytest.skip("no C compiler: no kernel is built or loaded")
    monkeypatch.setattr(ckernels, "_libs", {})
    monkeypatch.setenv("ERC_CACHE_DIR", str(tmp_path / "erc"))
    (tmp_path / "erc" / "kernels").mkdir(parents=True)
    for folder, mode in ((tmp_path / "erc" / "kernels", 0o777), (tmp_path / "erc", 0o775)):
        folder.chmod(mode)
        with pytest.raises(UserError, match=f"{folder} is writable by other users"):
            cscan.available()  # refused, not worked around with a warning
        with pytest.raises(UserError, match=f"{folder} is writable by other users"):
            ckernels.check_cache()  # what a command can ask before any work
        folder.chmod(0o700)


def test_a_library_that_is_not_the_one_built_is_built_again_before_loading(tmp_path, monkeypatch) -> None:
    if ckernels._compiler() is None:
        pytest.skip("no C compiler")
    monkeypatch.setenv("ERC_CACHE_DIR", str(tmp_path))
    ckernels.build("token_attention", cattention.FLAGS)
    (lib,) = (tmp_path / "kernels").glob("token_attention-*.so")
    good = lib.read_bytes()
    damaged = lib.with_name(lib.name + ".new")  # replaced or damaged after its build: a new file, so that the
    damaged.write_bytes(good[:-100] + b"\0" * 100)  # copy this process has loaded is not written into (a
    os.replace(damaged, lib)  # library rewritten in place under its own mapping crashes the process at exit)
    ckernels.build("token_attention", cattention.FLAGS)
    assert lib.read_bytes() == good  # the stamp's hash did not match: rebuilt, then loaded
    stamp = lib.with_name(lib.name + ".json")
    stamp.unlink()  # a library without a stamp (an older erc's): rebuilt too
    mtime = lib.stat().st_mtime_ns
    ckernels.build("token_attention", cattention.FLAGS)
    assert stamp.is_file() and lib.stat().st_mtime_ns != mtime
