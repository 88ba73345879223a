"""Ablation differences with 95 % intervals: the paired t-interval over seeds, the paired bootstrap
over test utterances, their inputs (run directories) and the ablation table that shows them."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score

from erc.train.intervals import Comparison, bootstrap_interval, compare, format_ci, paired_t_interval, weighted_f1_rows
from erc.train.report import ablation_table

LABELS = ["a", "b", "c"]


def test_weighted_f1_rows_is_sklearns_weighted_f1() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, size=(6, 50))
    p = np.where(rng.random((6, 50)) < 0.6, y, rng.integers(0, 4, size=(6, 50)))
    p[0] = 0  # one row predicts a single class (ill-defined precision elsewhere)
    y[1, :] = np.where(y[1] == 3, 2, y[1])  # one row whose truth lacks a class that is predicted
    want = [f1_score(y[r], p[r], average="weighted", zero_division=0) for r in range(6)]
    np.testing.assert_allclose(weighted_f1_rows(y, p, 4), want, rtol=1e-12)


def test_paired_t_interval_hand_values() -> None:
    # mean 2, sem 1 / sqrt(3), t(0.975, 2 df) = 4.302653
    low, high = paired_t_interval([1.0, 2.0, 3.0])
    half = 4.302652729749464 / math.sqrt(3)
    assert low == pytest.approx(2 - half) and high == pytest.approx(2 + half)
    assert all(math.isnan(v) for v in paired_t_interval([0.5]))  # one pair: no interval
    assert paired_t_interval([0.1, 0.1]) == (pytest.approx(0.1), pytest.approx(0.1))


def test_bootstrap_interval_extremes_and_coverage() -> None:
    y = np.array([0, 1, 2, 0, 1, 2, 0, 1])
    same = bootstrap_interval([(y, y[None], y[None])], 3, resamples=200)
    assert same == (0.0, 0.0)
    wrong = (y + 1) % 3
    assert bootstrap_interval([(y, wrong[None], y[None])], 3, resamples=200) == (1.0, 1.0)  # W-F1 0 -> 1 on every draw
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 400)
    ref = np.stack([np.where(rng.random(400) < 0.6, y, rng.integers(0, 3, 400)) for _ in range(2)])
    var = np.stack([np.where(rng.random(400) < 0.7, y, rng.integers(0, 3, 400)) for _ in range(2)])
    low, high = bootstrap_interval([(y, ref, var)], 3, resamples=400)
    observed = np.mean(weighted_f1_rows(np.stack([y, y]), var, 3) - weighted_f1_rows(np.stack([y, y]), ref, 3))
    assert low < observed < high and 0.0 < high - low < 0.2


def _run(root: Path, name: str, seed: int, preds: list[str], truth: list[str]) -> Path:
    d = root / name / f"seed{seed}"
    d.mkdir(parents=True)
    wf1 = f1_score(truth, preds, average="weighted", zero_division=0)
    (d / "metrics.json").write_text(json.dumps({"seed": seed, "test": {"weighted_f1": wf1}}))
    df = pd.DataFrame({"utterance_id": [f"u{i}" for i in range(len(truth))], "dialogue_id": "d", "split": "test",
                       "label": truth, "pred": preds})
    for lab in LABELS:
        df[f"p_{lab}"] = 0.0
    dev = df.iloc[:2].assign(split="dev", utterance_id=["x0", "x1"])  # dev rows are not scored
    pd.concat([df, dev]).to_csv(d / "predictions.csv", index=False)
    return d


def test_compare_pairs_runs_by_seed(tmp_path: Path) -> None:
    truth = ["a", "b", "c", "a", "b", "c"] * 5
    ref = {s: _run(tmp_path, "full", s, truth, truth) for s in range(3)}  # perfect
    worse = [("b" if i % 3 == 0 else t) for i, t in enumerate(truth)]
    var = {s: _run(tmp_path, "no-x", s, worse, truth) for s in range(2)}  # seeds 0, 1 only
    c = compare(ref, var)
    assert c is not None and c.pairs == 2
    want = f1_score(truth, worse, average="weighted") - 1.0
    assert c.delta == pytest.approx(want)
    assert c.seeds_ci == (pytest.approx(want), pytest.approx(want))  # the same difference on both seeds
    assert c.boot_ci[0] <= want <= c.boot_ci[1] < 0
    assert compare(ref, {7: var[0]}) is None  # no shared seed


def test_format_and_table_mark_intervals_that_contain_zero() -> None:
    assert format_ci((-0.0123, 0.0045)) == "[-1.23, +0.45] *"
    assert format_ci((0.01, 0.02)) == "[+1.00, +2.00]"
    assert format_ci((math.nan, math.nan)) == "n/a"
    comps = {"no-mamba": Comparison(-0.055, (-0.08, -0.03), (-0.07, -0.04), 2),
             "no-mec": Comparison(-0.01, (-0.05, 0.03), (-0.02, 0.001), 2)}
    table = ablation_table({"full": [0.70, 0.72], "no-mamba": [0.65, 0.66], "no-mec": [0.69, 0.71]}, comparisons=comps)
    lines = table.splitlines()
    assert "95 % CI over seeds" in lines[0] and "bootstrap" in lines[0]
    assert lines[2].startswith("| full | 71.00 ± 1.41 | — |")
    assert lines[3] == "| no-mamba | 65.50 ± 0.71 | -5.50 | [-8.00, -3.00] | [-7.00, -4.00] |"
    assert lines[4] == "| no-mec | 70.00 ± 1.41 | -1.00 | [-5.00, +3.00] * | [-2.00, +0.10] * |"
    assert "contains 0" in lines[-1]
