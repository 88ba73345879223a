"""Stage 2's outputs and run folders under careless or unlucky use (issue 21): each case, then
what erc does now. Nothing is overwritten or lost without a word; a damaged run folder is one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.cli_utils import ROOT, assert_one_line_error, run_erc_here
from tests.synth_cache import write_synthetic_cache

FAST = ("--epochs", "2", "--seeds", "1", "--device", "cpu", "--threads", "1", "--quiet", "--set", "hidden=8")


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return write_synthetic_cache(tmp_path_factory.mktemp("out") / "c.h5", n_dialogues=10, lengths=(3, 5))


def _train(cache: Path, out: Path, *extra: str, model: str = "mlp"):
    return run_erc_here("train-head", "--model", model, "--features", str(cache), "--modalities", "t", *FAST,
                        "--out", str(out), *extra)


def test_a_second_train_head_into_a_folder_being_written_stops_at_once(cache, tmp_path) -> None:
    out = tmp_path / "x"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    first = subprocess.Popen([sys.executable, "-m", "erc.cli", "train-head", "--model", "gru", "--features", str(cache),
                              "--modalities", "t", "--epochs", "400", "--patience", "0", "--seeds", "1", "--device",
                              "cpu", "--threads", "1", "--quiet", "--out", str(out)],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not (out / ".lock").exists() and first.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert (out / ".lock").exists(), "the first run never took its folder's lock"
        second = run_erc_here("train-head", "--model", "gru", "--features", str(cache), "--modalities", "t",
                              "--epochs", "400", "--patience", "0", "--seeds", "1", "--device", "cpu", "--quiet",
                              "--out", str(out))
        assert_one_line_error(second, f"is being written by pid {first.pid}")
    finally:
        stdout, stderr = first.communicate(timeout=600)
    assert first.returncode == 0, stderr
    assert (out / "seed0" / "done").exists() and json.loads((out / "seed0" / "metrics.json").read_text())["epochs_run"] == 400
    assert not (out / ".lock").exists()


def test_out_holding_a_finished_run_of_another_config_is_refused_unless_overwrite(cache, tmp_path) -> None:
    out = tmp_path / "r"
    assert _train(cache, out).code == 0
    before = (out / "seed0" / "metrics.json").read_text()
    res = _train(cache, out, "--lr", "0.01")
    assert_one_line_error(res, "holds a finished run of another configuration", "--overwrite")
    assert (out / "seed0" / "metrics.json").read_text() == before  # untouched
    again = _train(cache, out, "--lr", "0.01", "--overwrite")
    assert again.code == 0, again.err
    assert json.loads((out / "seed0" / "config.json").read_text())["train"]["lr"] == 0.01


def test_the_same_config_again_is_skipped_not_refused(cache, tmp_path) -> None:
    out = tmp_path / "same"
    assert _train(cache, out).code == 0
    res = _train(cache, out)
    assert res.code == 0, res.err


@pytest.fixture(scope="module")
def run(cache, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "mlp"
    assert _train(cache, out).code == 0
    return out / "seed0"


@pytest.mark.parametrize("target", ["cache", "best.pt", "config.json", "predictions.csv"])
def test_predict_refuses_an_out_that_is_one_of_its_inputs(cache, run, target, tmp_path) -> None:
    out = cache if target == "cache" else run / target
    before = out.read_bytes()
    res = run_erc_here("predict", "--run", str(run), "--features", str(cache), "--device", "cpu", "--out", str(out))
    assert_one_line_error(res, "is one of this command's inputs")
    assert out.read_bytes() == before


def test_predict_refuses_an_out_linked_to_its_input(cache, run, tmp_path) -> None:
    link = tmp_path / "link.h5"
    link.symlink_to(cache)
    res = run_erc_here("predict", "--run", str(run), "--features", str(cache), "--device", "cpu", "--out", str(link))
    assert_one_line_error(res, "is one of this command's inputs")


def test_extract_refuses_an_out_that_is_its_manifest(tmp_path) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text("dialogue_id,utterance_id,text,label,split\nd,u,hi,joy,train\n")
    res = run_erc_here("extract", "--dataset", "manifest", "--root", str(manifest), "--out", str(manifest),
                       "--audio", "none", "--video", "none")
    assert_one_line_error(res, "is one of this command's inputs")
    assert manifest.read_text().startswith("dialogue_id")


def _damage(run: Path, tmp_path: Path, how: str) -> Path:
    import shutil

    broken = tmp_path / how
    shutil.copytree(run, broken)
    if how == "truncated":
        data = (broken / "best.pt").read_bytes()
        (broken / "best.pt").write_bytes(data[: len(data) // 3])
    elif how == "pickle":
        torch.save({"state_dict": {}, "config": object()}, broken / "best.pt")  # weights_only refuses object()
    elif how == "other-head":
        state = torch.load(broken / "best.pt", weights_only=True)
        state["state_dict"] = {"gru.weight": torch.zeros(3)}
        torch.save(state, broken / "best.pt")
    elif how == "config-json":
        (broken / "config.json").write_text("{not json")
    elif how == "config-string":
        (broken / "config.json").write_text('"a string"')
    return broken


@pytest.mark.parametrize("how,needle", [("truncated", "cannot be read as a run's checkpoint"),
                                        ("pickle", "cannot be read as a run's checkpoint"),
                                        ("other-head", "holds weights of another head"),
                                        ("config-json", "is not readable JSON"),
                                        ("config-string", "is not a run's config.json")])
def test_a_damaged_run_folder_under_predict_is_one_line_naming_the_file(cache, run, tmp_path, how, needle) -> None:
    broken = _damage(run, tmp_path, how)
    res = run_erc_here("predict", "--run", str(broken), "--features", str(cache), "--device", "cpu",
                       "--out", str(tmp_path / "p.csv"))
    assert_one_line_error(res, needle, str(broken))


def test_more_threads_than_cores_is_one_line(cache, tmp_path) -> None:
    res = run_erc_here("train-head", "--model", "mlp", "--features", str(cache), "--threads", "100000",
                       "--out", str(tmp_path / "t"))
    assert_one_line_error(res, "--threads 100000", "cores")
    assert not (tmp_path / "t").exists()


def test_a_width_that_cannot_fit_in_memory_is_refused_before_allocation(cache, tmp_path) -> None:
    res = run_erc_here("train-head", "--model", "gru", "--features", str(cache), "--set", "hidden=1000000000",
                       "--epochs", "1", "--seeds", "1", "--device", "cpu", "--quiet", "--out", str(tmp_path / "w"))
    assert_one_line_error(res, "does not fit", "hidden=1000000000")
    res = run_erc_here("train-head", "--model", "gru", "--features", str(cache), "--set", "hidden=100000",
                       "--epochs", "1", "--seeds", "1", "--device", "cpu", "--quiet", "--out", str(tmp_path / "w"))
    assert_one_line_error(res, "does not fit", "GiB")
    assert not (tmp_path / "w" / "seed0").exists()


@pytest.mark.parametrize("value", [",", "t,", ",a", ""])
def test_an_empty_modalities_entry_is_one_line(cache, tmp_path, value) -> None:
    res = run_erc_here("train-head", "--model", "mlp", "--features", str(cache), "--modalities", value,
                       "--out", str(tmp_path / "m"))
    assert_one_line_error(res, "--modalities", "empty entry")


def test_a_cache_without_a_labelled_train_utterance_is_one_line(tmp_path) -> None:
    cache = write_synthetic_cache(tmp_path / "c.h5", n_dialogues=6, lengths=(3, 4), unknown_label_rate=1.0)
    res = _train(cache, tmp_path / "r")
    assert_one_line_error(res, "label", "not in its label list")


def test_labels_outside_the_label_list_are_refused_naming_them(tmp_path) -> None:
    cache = write_synthetic_cache(tmp_path / "c.h5", n_dialogues=8, lengths=(3, 4), unknown_label_rate=0.2, seed=3)
    res = _train(cache, tmp_path / "r")
    assert_one_line_error(res, "whose label is not in its label list", "'xxx'")


def test_an_erc_warning_is_one_line_on_stderr(cache, tmp_path) -> None:
    """Pooled (utterance) folds warn of their leak as one ``erc: warning:`` line, not Python's
    two-line ``file:line: UserWarning`` form."""
    got = _train(cache, tmp_path / "pooled", "--folds", "3", "--fold-grouping", "utterance")
    assert got.code == 0, got.err
    lines = [ln for ln in got.err.splitlines() if "leak" in ln]
    assert lines and all(ln.startswith("erc: warning: ") for ln in lines), got.err
    assert "UserWarning" not in got.err and "warnings.warn" not in got.err
