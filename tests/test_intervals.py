"""Ablation differences with 95 % intervals: the paired t over seeds, the corrected resampled t over
seeds x folds, the paired bootstraps over test utterances, dialogues, and seeds x dialogues, their
inputs (run directories) and the ablation table that shows them."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score

from erc.train.intervals import (Comparison, ScoredSet, bootstrap_interval, compare, corrected_t_interval, format_ci,
                                 paired_t_interval, weighted_f1_weighted)
from erc.train.report import ablation_table

LABELS = ["a", "b", "c"]
MODES = ("utterances", "dialogues", "seeds+dialogues")


def test_weighted_f1_weighted_is_sklearns_weighted_f1_with_sample_weights() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, size=50)
    y[y == 3] = 2  # the truth lacks a class that is predicted
    p = np.where(rng.random(50) < 0.6, y, rng.integers(0, 4, size=50))
    w = rng.multinomial(50, np.full(50, 1 / 50), size=6).astype(float)
    w[0] = 1.0
    want = [f1_score(y, p, average="weighted", sample_weight=w[r], zero_division=0) for r in range(6)]
    np.testing.assert_allclose(weighted_f1_weighted(w, y, p, 4), want, rtol=1e-12)
    single = np.zeros(50, dtype=int)  # predicts a single class (ill-defined precision elsewhere)
    assert weighted_f1_weighted(w[:1], y, single, 4)[0] == pytest.approx(f1_score(y, single, average="weighted", zero_division=0))


def test_paired_t_interval_hand_values() -> None:
    # mean 2, sem 1 / sqrt(3), t(0.975, 2 df) = 4.302653
    low, high = paired_t_interval([1.0, 2.0, 3.0])
    half = 4.302652729749464 / math.sqrt(3)
    assert low == pytest.approx(2 - half) and high == pytest.approx(2 + half)
    assert all(math.isnan(v) for v in paired_t_interval([0.5]))  # one pair: no interval
    assert paired_t_interval([0.1, 0.1]) == (pytest.approx(0.1), pytest.approx(0.1))


def test_corrected_t_is_wider_than_the_naive_t_on_fold_differences() -> None:
    # 2 seeds x 5 folds, each fold tests on 1/5 and trains on 3/5: n_test / n_train = 1/3
    diffs = [0.01, -0.02, 0.03, 0.00, 0.02, 0.015, -0.01, 0.025, 0.005, 0.01]
    naive = paired_t_interval(diffs)
    low, high = corrected_t_interval(diffs, 1 / 3)
    half = 2.2621571627409915 * math.sqrt(np.var(diffs, ddof=1) * (1 / 10 + 1 / 3))  # t(0.975, 9 df)
    assert (low, high) == (pytest.approx(np.mean(diffs) - half), pytest.approx(np.mean(diffs) + half))
    assert high - low > 2 * (naive[1] - naive[0])  # sqrt((1/10 + 1/3) * 10) = 2.08 times as wide
    assert corrected_t_interval(diffs, 0.0) == naive


def _set(y: np.ndarray, ref: np.ndarray, var: np.ndarray, dialogues: np.ndarray | None = None,
         seeds: tuple | None = None) -> ScoredSet:
    ref, var = np.atleast_2d(ref), np.atleast_2d(var)
    return ScoredSet(y, np.arange(len(y)) // 4 if dialogues is None else dialogues, ref, var,
                   seeds or tuple(range(ref.shape[0])))


@pytest.mark.parametrize("mode", MODES)
def test_identical_systems_give_zero_and_a_uniform_gain_gives_a_point(mode: str) -> None:
    y = np.array([0, 1, 2, 0, 1, 2, 0, 1])
    assert bootstrap_interval([_set(y, np.stack([y, y]), np.stack([y, y]))], 3, mode, resamples=200) == (0.0, 0.0)
    wrong = (y + 1) % 3
    assert bootstrap_interval([_set(y, wrong, y)], 3, mode, resamples=200) == (1.0, 1.0)  # W-F1 0 -> 1 on every draw


def test_dialogue_bootstrap_is_wider_when_errors_are_shared_inside_dialogues() -> None:
    # 40 dialogues of 10 turns: on each dialogue one system gets every turn right and the other every
    # turn wrong (which one, at random): errors are perfectly correlated inside a dialogue
    rng = np.random.default_rng(3)
    dialogues = np.repeat(np.arange(40), 10)
    y = rng.integers(0, 3, 400)
    var_wins = rng.random(40)[dialogues] < 0.55
    wrong = (y + 1) % 3
    ref, var = np.where(var_wins, wrong, y), np.where(var_wins, y, wrong)
    s = _set(y, ref, var, dialogues)
    lo_u, hi_u = bootstrap_interval([s], 3, "utterances", resamples=400)
    lo_d, hi_d = bootstrap_interval([s], 3, "dialogues", resamples=400)
    observed = f1_score(y, var, average="weighted") - f1_score(y, ref, average="weighted")
    assert lo_d < observed < hi_d and lo_u < observed < hi_u
    assert hi_d - lo_d > 2.5 * (hi_u - lo_u)  # about sqrt(10) (the dialogue length) times as wide


def test_seeds_x_dialogues_is_wider_than_dialogues_when_seeds_disagree() -> None:
    rng = np.random.default_rng(4)
    dialogues = np.repeat(np.arange(30), 8)
    y = rng.integers(0, 3, 240)
    ref = np.stack([np.where(rng.random(240) < 0.6, y, (y + 1) % 3) for _ in range(4)])
    var = np.stack([np.where(rng.random(240) < acc, y, (y + 1) % 3) for acc in (0.5, 0.6, 0.7, 0.8)])
    s = _set(y, ref, var, dialogues)
    lo_d, hi_d = bootstrap_interval([s], 3, "dialogues", resamples=400)
    lo_c, hi_c = bootstrap_interval([s], 3, "seeds+dialogues", resamples=400)
    assert hi_c - lo_c > 1.5 * (hi_d - lo_d)


def _run(root: Path, name: str, seed: int, preds: list[str], truth: list[str], fold: int | None = None,
         n_folds: int = 5) -> Path:
    d = root / name / f"seed{seed}" / ("" if fold is None else f"fold{fold}")
    d.mkdir(parents=True)
    wf1 = f1_score(truth, preds, average="weighted", zero_division=0)
    (d / "metrics.json").write_text(json.dumps({"seed": seed, "test": {"weighted_f1": wf1}}))
    folds = None if fold is None else {"n_folds": n_folds, "fold": fold, "grouping": "dialogue", "seed": 0}
    (d / "config.json").write_text(json.dumps({"train": {"seed": seed}, "folds": folds}))
    n = len(truth)
    (d / "provenance.json").write_text(json.dumps({"groups": {"text": {"n": n * n_folds}}}))  # 1 test + 1 dev fold
    tag = "" if fold is None else f"f{fold}"
    df = pd.DataFrame({"utterance_id": [f"u{tag}{i}" for i in range(n)], "dialogue_id": [f"d{tag}{i // 3}" for i in range(n)],
                       "split": "test", "label": truth, "pred": preds})
    for lab in LABELS:
        df[f"p_{lab}"] = 0.0
    dev = df.iloc[:n].assign(split="dev", utterance_id=[f"x{i}" for i in range(n)])  # dev rows are not scored
    pd.concat([df, dev]).to_csv(d / "predictions.csv", index=False)
    return d


def test_compare_pairs_runs_by_seed(tmp_path: Path) -> None:
    truth = ["a", "b", "c", "a", "b", "c"] * 5
    ref = {s: _run(tmp_path, "full", s, truth, truth) for s in range(3)}  # perfect
    worse = [("b" if i % 3 == 0 else t) for i, t in enumerate(truth)]
    var = {s: _run(tmp_path, "no-x", s, worse, truth) for s in range(2)}  # seeds 0, 1 only
    c = compare(ref, var)
    assert c is not None and c.pairs == 2 and c.folds is None and c.runs_method == "paired t"
    want = f1_score(truth, worse, average="weighted") - 1.0
    assert c.delta == pytest.approx(want)
    assert c.runs_ci == (pytest.approx(want), pytest.approx(want))  # the same difference on both seeds
    for ci in (c.combined_ci, c.dialogue_ci, c.utterance_ci):
        assert ci[0] <= want <= ci[1] < 0
    assert compare(ref, {7: var[0]}) is None  # no shared seed


def test_compare_on_fold_runs_uses_the_corrected_t(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    truth = list(rng.choice(LABELS, 24))
    ref, var, diffs = {}, {}, []
    for s in range(2):
        for k in range(5):
            noisy = [t if rng.random() < 0.7 else "a" for t in truth]
            ref[(s, k)] = _run(tmp_path, "full", s, truth, truth, fold=k)
            var[(s, k)] = _run(tmp_path, "no-x", s, noisy, truth, fold=k)
            diffs.append(f1_score(truth, noisy, average="weighted") - 1.0)
    c = compare(ref, var, resamples=200)
    assert c is not None and c.pairs == 10 and c.folds == 5 and c.runs_method == "corrected t"
    # n_test / n_train = 24 / (5 * 24 - 24 dev - 24 test) = 1/3, as the files say; the two seeds of a
    # fold share its partition: their differences are averaged per fold before the correction (J = 5)
    per_fold = [(diffs[k] + diffs[5 + k]) / 2 for k in range(5)]
    assert c.runs_ci == pytest.approx(corrected_t_interval(per_fold, 1 / 3))
    naive = paired_t_interval(diffs)
    assert c.runs_ci[1] - c.runs_ci[0] > naive[1] - naive[0]
    assert "corrected t" in ablation_table({"full": [1.0], "no-x": [0.8]}, comparisons={"no-x": c}).splitlines()[0]


def test_format_and_table_mark_intervals_that_contain_zero() -> None:
    assert format_ci((-0.0123, 0.0045)) == "[-1.23, +0.45] *"
    assert format_ci((0.01, 0.02)) == "[+1.00, +2.00]"
    assert format_ci((math.nan, math.nan)) == "n/a"
    comps = {"no-mamba": Comparison(-0.055, 2, combined_ci=(-0.09, -0.02), dialogue_ci=(-0.07, -0.04), runs_ci=(-0.08, -0.03)),
             "no-mec": Comparison(-0.01, 2, combined_ci=(-0.06, 0.04), dialogue_ci=(-0.02, 0.001), runs_ci=(-0.05, 0.03))}
    table = ablation_table({"full": [0.70, 0.72], "no-mamba": [0.65, 0.66], "no-mec": [0.69, 0.71]}, comparisons=comps)
    lines = table.splitlines()
    assert lines[0] == "| variant | W-F1 (%) | delta vs full | 95% CI | CI seeds (paired t) | CI dialogues |"
    assert lines[2].startswith("| full | 71.00 ± 1.41 | — |")
    assert lines[3] == "| no-mamba | 65.50 ± 0.71 | -5.50 | [-9.00, -2.00] | [-8.00, -3.00] | [-7.00, -4.00] |"
    assert lines[4] == "| no-mec | 70.00 ± 1.41 | -1.00 | [-6.00, +4.00] * | [-5.00, +3.00] * | [-2.00, +0.10] * |"
    assert "contains 0" in lines[-1] and "dialogues" in lines[-2]


def test_the_fold_ratio_counts_the_labelled_utterances_a_run_records(tmp_path: Path) -> None:
    from erc.train.intervals import fold_test_train_ratio

    (tmp_path / "metrics.json").write_text(json.dumps({"n_labelled": {"train": 300, "dev": 40, "test": 60}}))
    assert fold_test_train_ratio(tmp_path, 5) == pytest.approx(60 / 300)
    (tmp_path / "metrics.json").write_text(json.dumps({}))  # nothing recorded, no predictions: 1 / (K - 2)
    assert fold_test_train_ratio(tmp_path, 5) == pytest.approx(1 / 3)
