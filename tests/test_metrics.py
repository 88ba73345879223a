"""Metrics against scikit-learn on a hand example."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import f1_score

from erc.train.metrics import aggregate, classification_metrics, mean_std, summarise, weighted_f1

Y_TRUE = [0, 0, 1, 1, 2, 2, 2]
Y_PRED = [0, 1, 1, 1, 2, 0, 2]
LABELS = ["neu", "hap", "sad", "ang"]  # "ang" never occurs


def test_classification_metrics_hand_example():
    m = classification_metrics(Y_TRUE, Y_PRED, LABELS)
    assert m["accuracy"] == pytest.approx(5 / 7)
    # per class: neu P=1/2 R=1/2 -> 0.5; hap P=2/3 R=1 -> 0.8; sad P=1 R=2/3 -> 0.8; ang: no F1
    per = m["per_class_f1"]
    assert per["ang"] is None
    assert {k: v for k, v in per.items() if k != "ang"} == pytest.approx({"neu": 0.5, "hap": 0.8, "sad": 0.8})
    assert m["weighted_f1"] == pytest.approx((2 * 0.5 + 2 * 0.8 + 3 * 0.8) / 7)
    assert m["weighted_f1"] == pytest.approx(f1_score(Y_TRUE, Y_PRED, average="weighted"))
    # macro F1 over the classes that occur (as scikit-learn's default): "ang" is left out
    assert m["macro_f1"] == pytest.approx((0.5 + 0.8 + 0.8) / 3)
    assert m["macro_f1"] == pytest.approx(f1_score(Y_TRUE, Y_PRED, average="macro"))
    assert m["confusion"] == [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 2, 0], [0, 0, 0, 0]]
    assert m["support"] == {"neu": 2, "hap": 2, "sad": 3, "ang": 0} and m["n"] == 7
    assert weighted_f1(np.array(Y_TRUE), np.array(Y_PRED)) == pytest.approx(m["weighted_f1"])


def test_empty_and_summaries():
    assert math.isnan(classification_metrics([], [], LABELS)["weighted_f1"])
    assert summarise([0.70, 0.72]) == "71.00 ± 1.41"
    assert summarise([0.5]) == "50.00 ± 0.00"
    assert summarise([]) == "n/a"
    assert mean_std([0.1, float("nan"), 0.3]) == pytest.approx((0.2, 0.1414213))
    agg = aggregate([classification_metrics(Y_TRUE, Y_PRED, LABELS), classification_metrics(Y_TRUE, Y_TRUE, LABELS)])
    assert agg["accuracy"]["mean"] == pytest.approx((5 / 7 + 1) / 2)
    assert agg["per_class_f1"]["neu"]["mean"] == pytest.approx(0.75)
