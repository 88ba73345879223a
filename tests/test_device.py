"""One device rule (erc.device) for extract, train-head, ablate, predict and the Python API:
auto | cpu | cuda | cuda:N."""

from __future__ import annotations

import pytest
import torch

from erc.device import resolve_device
from erc.errors import UserError
from erc.train.config import TrainConfig
from tests.cli_utils import assert_one_line_error, run_erc_here

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks what a machine without CUDA says")


def test_cpu_and_auto_resolve_to_the_cpu_without_cuda(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == "cpu"


@pytest.mark.parametrize("name", ["tpu", "cuda:", "cuda:x", "CUDA", "cuda:-1", ""])
def test_a_malformed_device_is_refused_naming_the_forms(name: str) -> None:
    with pytest.raises(UserError, match="auto, cpu, cuda or cuda:N"):
        resolve_device(name)


def test_cuda_n_picks_gpu_n_and_an_index_past_the_gpus_is_refused(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda") == "cuda"
    assert resolve_device("cuda:1") == "cuda:1"
    assert resolve_device("auto") == "cuda"
    with pytest.raises(UserError, match="2 CUDA GPU"):
        resolve_device("cuda:2")


def test_train_config_accepts_cuda_n_and_resolves_it_on_this_machine(monkeypatch) -> None:
    cfg = TrainConfig(device="cuda:1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert cfg.torch_device() == torch.device("cuda", 1)


COMMANDS = {
    "extract": ("extract", "--dataset", "demo", "--root", "nowhere"),
    "train-head": ("train-head", "--model", "mlp", "--dataset", "nowhere"),
    "ablate": ("ablate", "--model", "mlp", "--dataset", "nowhere"),
    "predict": ("predict", "--run", "nowhere"),
}


@no_cuda
@pytest.mark.parametrize("command", list(COMMANDS))
def test_cuda_n_without_cuda_is_the_same_one_line_as_cuda(command: str, tmp_path) -> None:
    lines = []
    for device in ("cuda", "cuda:1"):
        res = run_erc_here(*COMMANDS[command], "--device", device, cwd=tmp_path)
        assert_one_line_error(res, "CUDA")
        lines.append(next(line for line in res.err.splitlines() if line.startswith("erc: error:")))
    assert lines[0] == lines[1]
    assert not any(tmp_path.iterdir())  # refused before any work
