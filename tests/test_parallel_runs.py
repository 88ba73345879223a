"""Several runs at once (--jobs): each run stays what it is alone (same identity, folder and, at the
same thread count, the same numbers), and an ablation killed mid-way resumes to the same table."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from erc.errors import UserError
from erc.train.parallel import parse_jobs
from tests.cli_utils import ROOT, assert_one_line_error, run_erc_here
from tests.synth_cache import write_synthetic_cache

ABLATE = ("ablate", "--model", "gru", "--variants", "full,no-speaker", "--seeds", "2", "--epochs", "3",
          "--batch-size", "4", "--set", "hidden=8", "--modalities", "t,a", "--device", "cpu", "--threads", "1", "--quiet")


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return write_synthetic_cache(tmp_path_factory.mktemp("par") / "c.h5", n_dialogues=12, lengths=(3, 6), seed=4)


def _metrics(root: Path) -> dict[str, dict]:
    return {str(p.parent.relative_to(root)): json.loads(p.read_text()) for p in sorted(root.rglob("metrics.json"))}


def test_jobs_takes_a_count_or_auto() -> None:
    assert parse_jobs("3") == 3 and parse_jobs(None) == 1 and parse_jobs("auto") >= 1
    for bad in ("0", "-2", "many"):
        with pytest.raises(UserError, match="--jobs"):
            parse_jobs(bad)


def test_a_bad_jobs_value_is_one_line(cache, tmp_path) -> None:
    assert_one_line_error(run_erc_here(*ABLATE, "--features", str(cache), "--jobs", "many", "--out", str(tmp_path)),
                          "--jobs")


def test_an_ablation_on_two_processes_trains_the_runs_one_process_trains(cache, tmp_path) -> None:
    one = run_erc_here(*ABLATE, "--features", str(cache), "--out", str(tmp_path / "one"))
    two = run_erc_here(*ABLATE, "--features", str(cache), "--jobs", "2", "--out", str(tmp_path / "two"))
    assert one.code == 0, one.err
    assert two.code == 0, two.err
    a, b = _metrics(tmp_path / "one"), _metrics(tmp_path / "two")
    assert len(a) == 4 and a.keys() == b.keys()
    for run in a:  # one thread each, the same arithmetic: the same numbers
        assert a[run]["test"] == b[run]["test"] and a[run]["best_epoch"] == b[run]["best_epoch"], run
    table = lambda d: (d / "gru-ablation-ta.md").read_text()  # noqa: E731
    assert table(tmp_path / "one") == table(tmp_path / "two")


def test_an_ablation_killed_mid_way_resumes_to_the_table_of_an_uninterrupted_one(cache, tmp_path) -> None:
    args = [*ABLATE[:8], "8", *ABLATE[9:], "--features", str(cache)]  # 8 epochs: time to be killed
    whole = run_erc_here(*args, "--out", str(tmp_path / "whole"))
    assert whole.code == 0, whole.err
    out = tmp_path / "killed"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "erc.cli", *args, "--out", str(out)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not list(out.rglob("done")) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = len(list(out.rglob("done")))
    assert 1 <= finished < 4, f"{finished} runs had finished when killed"
    again = run_erc_here(*args, "--out", str(out))
    assert again.code == 0, again.err
    assert (out / "gru-ablation-ta.md").read_text() == (tmp_path / "whole" / "gru-ablation-ta.md").read_text()


def test_ablate_refuses_a_set_that_a_listed_variant_switches(cache, tmp_path) -> None:
    res = run_erc_here("ablate", "--model", "matav", "--features", str(cache), "--set", "use_mec=true",
                       "--out", str(tmp_path / "a"))
    assert_one_line_error(res, "use_mec", "no-mec")
    assert not (tmp_path / "a").exists()


def test_ablate_with_folds_pairs_runs_by_seed_and_fold_with_the_corrected_interval(cache, tmp_path) -> None:
    res = run_erc_here(*ABLATE, "--features", str(cache), "--folds", "3", "--out", str(tmp_path / "f"))
    assert res.code == 0, res.err
    assert len(list((tmp_path / "f").rglob("fold2/done"))) == 4  # 2 variants x 2 seeds x fold 0..2
    assert "corrected t" in (tmp_path / "f" / "gru-ablation-ta.md").read_text()


def test_runs_are_dealt_over_the_gpus_of_a_machine_with_several(monkeypatch) -> None:
    import torch

    from erc.train.parallel import spread_devices

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert spread_devices("auto", 3) == ["cuda:0", "cuda:1", "cuda:0"]
    assert spread_devices("cuda:1", 2) == ["cuda:1", "cuda:1"] and spread_devices("cpu", 2) == ["cpu", "cpu"]
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert spread_devices("auto", 2) == ["auto", "auto"]


def test_a_finished_run_whose_metrics_were_lost_is_trained_again(cache, tmp_path) -> None:
    args = (*ABLATE[:3], "--seeds", "1", "--epochs", "2", "--features", str(cache), "--set", "hidden=8",
            "--device", "cpu", "--quiet", "--out", str(tmp_path / "m"))
    train = ("train-head", *args[1:])
    assert run_erc_here(*train).code == 0
    metrics = tmp_path / "m" / "seed0" / "metrics.json"
    metrics.write_text("{broken")
    again = run_erc_here(*train)
    assert again.code == 0, again.err
    assert json.loads(metrics.read_text())["best_epoch"] >= 1
