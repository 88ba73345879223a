"""The training options are defined once (erc.cli_options.TrainOptions) for train-head and ablate,
and the policy behind them (data choice, run folders) is erc.train's: the CLI and the Python API
file a run in the same folder."""

from __future__ import annotations

from dataclasses import fields

import pytest

from erc.cli_options import TrainOptions
from erc.heads.registry import resolve_head
from erc.train.config import TrainConfig
from erc.train.selection import choose_data
from erc.train.sweep import run_sweep
from tests.cli_utils import run_erc_here
from tests.synth_cache import write_synthetic_cache


def _flag(name: str) -> str:
    return "--set" if name == "set_" else "--" + name.replace("_", "-")


@pytest.mark.parametrize("command", ["train-head", "ablate"])
def test_train_head_and_ablate_take_every_shared_option(command: str) -> None:
    res = run_erc_here(command, "--help")
    assert res.code == 0, res.err
    text = res.out.replace("\n", " ")
    for f in fields(TrainOptions):
        assert _flag(f.name) in text, (command, f.name)


def test_the_cli_and_the_python_api_file_a_run_in_the_same_folder(tmp_path, monkeypatch) -> None:
    cache = write_synthetic_cache(tmp_path / "c.h5", n_dialogues=8, lengths=(3, 5))
    monkeypatch.chdir(tmp_path)
    res = run_erc_here("train-head", "--model", "mlp", "--features", str(cache), "--modalities", "t", "--set", "hidden=8",
                       "--epochs", "1", "--seeds", "1", "--device", "cpu", "--quiet")
    assert res.code == 0, res.err
    choice = choose_data(features=cache, modalities="t")
    spec = resolve_head("mlp", "full", {"hidden": "8"})
    folder = choice.run_dir("mlp", spec)
    assert (tmp_path / folder / "seed0" / "done").exists()
    # the API, on the same choice, finds that run finished and trains nothing
    cfg = TrainConfig.for_head(spec.cls, epochs=1, device="cpu", quiet=True)
    res = run_sweep(choice.cache, spec, choice.modalities, cfg, folder, seeds=1)
    assert [r.skipped for r in res.runs] == [True]


def test_options_given_as_none_fall_back_to_the_heads_train_defaults() -> None:
    opts = TrainOptions(model="matav", device="cpu")
    cfg = opts.train_config(resolve_head("matav").cls)
    assert cfg.batch_size == resolve_head("matav").cls.train_defaults["batch_size"]
