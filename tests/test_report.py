"""Reports: report.md / report.csv, per-run PNGs, the ablation table, and the CLI commands."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest
from typer.testing import CliRunner

from erc.errors import UserError
from erc.train.report import ablation_table, write_report
from erc.train.config import TrainConfig
from tests.train_utils import fit_seeds
from tests.synth_cache import TinyHead, write_synthetic_cache

PNG = b"\x89PNG\r\n\x1a\n"
FAST = TrainConfig(epochs=3, batch_size=4, lr=3e-3, patience=0, device="cpu", num_threads=1, quiet=True)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return write_synthetic_cache(tmp_path_factory.mktemp("rep") / "c.h5", n_dialogues=12, lengths=(3, 6), seed=5)


def test_report_files(cache, tmp_path):
    fit_seeds(cache, TinyHead, ["t", "a"], {}, "full", FAST, tmp_path / "tiny-full", seeds=[0, 1])
    fit_seeds(cache, TinyHead, ["t", "a"], {}, "small", FAST, tmp_path / "tiny-small", seeds=[0])
    df = write_report(tmp_path)
    assert (tmp_path / "report.md").exists() and (tmp_path / "report.csv").exists()
    csv = pd.read_csv(tmp_path / "report.csv")
    assert len(csv) == 2 and sorted(csv["runs"]) == [1, 2] and set(csv["variant"]) == {"full", "small"}
    assert {"test_wf1", "test_acc", "test_macro_f1", "f1_c0"} <= set(df.columns)
    md = (tmp_path / "report.md").read_text()
    assert "| TinyHead | full |" in md and "±" in md
    for run in list((tmp_path / "tiny-full").glob("seed*")) + [tmp_path / "tiny-small" / "seed0"]:
        for name in ("confusion.png", "curves.png"):
            assert (run / name).read_bytes()[:8] == PNG, run / name


def test_ablation_table():
    table = ablation_table({"full": [0.70, 0.72], "no-mamba": [0.65, 0.66], "no-mec": [0.70]})
    lines = table.splitlines()
    assert lines[0].startswith("| variant | W-F1") and "Δ vs full" in lines[0]
    assert lines[2] == "| full | 71.00 ± 1.41 | — |"
    assert lines[3] == "| no-mamba | 65.50 ± 0.71 | -5.50 |"
    assert lines[4].endswith("| -1.00 |")


def test_cli_train_ablate_report(cache, tmp_path, monkeypatch):
    import torch

    from erc.cli import app

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread is fastest
    monkeypatch.chdir(tmp_path)

    runner = CliRunner()
    common = ["--features", str(cache), "--modalities", "t,a", "--epochs", "2", "--seeds", "2", "--device", "cpu", "--quiet",
              "--batch-size", "4"]
    monkeypatch.setenv("COLUMNS", "80")
    res = runner.invoke(app, ["train-head", "--model", "mlp", *common, "--threads", "1", "--out", str(tmp_path / "runs" / "mlp")])
    assert res.exit_code == 0, res.output + repr(res.exception)
    assert "test W-F1" in res.output and "±" in res.output
    # in an 80-column terminal the table row keeps every "mean±std" whole on one line
    row = next(line for line in res.output.splitlines() if line.startswith("mlp "))
    assert len(re.findall(r"\d+\.\d\d±\d+\.\d\d", row)) == 4, res.output
    assert max(len(line) for line in (res.output.split(row)[0] + row).splitlines()) <= 80, res.output
    assert (tmp_path / "runs" / "mlp" / "seed1" / "done").exists()
    res = runner.invoke(app, ["ablate", "--model", "gru", "--variants", "full,no-speaker", *common, "--out", str(tmp_path / "runs"),
                              "--precision", "bf16", "--threads", "1"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    assert "no-speaker" in res.output and "delta vs full" in res.output
    assert "95% CI" in res.output and "CI seeds (paired t)" in res.output and "CI dialogues" in res.output
    row = next(line for line in res.output.splitlines() if line.startswith("| no-speaker |"))
    assert row.count("[") == 3, row  # 2 seeds: seeds x dialogues, seeds, dialogues
    ablated = json.loads(next((tmp_path / "runs").glob("gru-no-speaker-*/seed0/config.json")).read_text())
    assert ablated["train"]["precision"] == "bf16"  # ablate takes train-head's training options
    for cmd in (["train-head", "--model", "mlp"], ["ablate", "--model", "gru"]):
        res = runner.invoke(app, [*cmd, *common, "--precision", "fp8"])
        assert isinstance(res.exception, UserError) and "--precision" in str(res.exception), (cmd, res.exception)
    res = runner.invoke(app, ["report", str(tmp_path / "runs")])
    assert res.exit_code == 0, res.output + repr(res.exception)
    assert (tmp_path / "runs" / "report.md").exists()
    # every row names its dataset (runs of several datasets can share a folder), in the CSV and on screen
    assert set(pd.read_csv(tmp_path / "runs" / "report.csv")["dataset"]) == {"synthetic"}
    # mlp, gru full, gru no-speaker; then no-speaker's difference to full with its intervals
    assert sum(line.startswith("synthetic ") for line in res.output.splitlines()) == 4
    assert "difference to full" in res.output and "CI seeds" in res.output
    md = (tmp_path / "runs" / "report.md").read_text()
    assert "delta_ci" in md and "delta_ci_seeds" in md and "delta_ci_test" in md
    for bad, needle in ((["--modalities", "x"], "unknown modality"), (["--variant", "nope"], "variant"),
                        (["--features", str(tmp_path / "none.h5")], "no feature cache")):
        args = ["train-head", "--model", "mlp", *common, *bad]
        res = runner.invoke(app, args)
        assert isinstance(res.exception, UserError) and needle in str(res.exception), (bad, res.exception)
    res = runner.invoke(app, ["train-head", "--model", "nope", *common])
    assert isinstance(res.exception, UserError)
    torch.set_num_threads(threads)


def test_weights_summary_names_origin_and_hash() -> None:
    from erc.train.report import weights_summary

    pre = {"origin": "pretrained", "sha256": "1a2b3c4d5e6f7a8b", "source": "minilm"}
    cfgs = [{"head_resolved": {"weights": {"text": pre, "audio": {"origin": "random", "sha256": f"{i}" * 16}}}} for i in range(2)]
    assert weights_summary(cfgs) == "text=pretrained 1a2b3c4d, audio=random"
    other = {"head_resolved": {"weights": {"text": {**pre, "sha256": "ffffffffffffffff"}}}}
    assert "2 different hashes" in weights_summary([cfgs[0], other])
    assert weights_summary([{"head_resolved": {}}, {}]) == ""
