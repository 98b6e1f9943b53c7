"""Scores against values worked out by hand."""

from __future__ import annotations

import math

import pytest

from boneclf.ml.metrics import (
    binary_metrics,
    bootstrap_interval,
    cohen_kappa,
    confusion,
    format_report,
    multiclass_metrics,
    per_class_report,
    roc_auc,
    study_scores,
)


def test_kappa_by_hand():
    # truth 1 1 1 0 0 0 0 0 ; pred 1 1 0 0 0 0 1 0 -> po = 6/8, pe = (3*3 + 5*5)/64 = 34/64
    truth = [1, 1, 1, 0, 0, 0, 0, 0]
    pred = [1, 1, 0, 0, 0, 0, 1, 0]
    po, pe = 6 / 8, 34 / 64
    assert cohen_kappa(truth, pred) == pytest.approx((po - pe) / (1 - pe))
    assert confusion(truth, pred, 2).tolist() == [[4, 1], [1, 2]]
    assert cohen_kappa([0, 1], [0, 1]) == 1.0


def test_auc_by_hand_with_ties():
    # positives 0.9, 0.4; negatives 0.4, 0.1: pairs (0.9>0.4, 0.9>0.1, 0.4=0.4 -> 1/2, 0.4>0.1) = 3.5/4
    assert roc_auc([1, 1, 0, 0], [0.9, 0.4, 0.4, 0.1]) == pytest.approx(3.5 / 4)
    assert math.isnan(roc_auc([1, 1], [0.2, 0.3]))


def test_study_is_the_mean_of_its_images():
    keys, labels, probs = study_scores(["a", "a", "b", "b", "b"], [1, 1, 0, 0, 0], [0.9, 0.2, 0.4, 0.6, 0.7])
    assert keys == ["a", "b"] and labels.tolist() == [1, 0]
    assert probs.tolist() == pytest.approx([0.55, 1.7 / 3])
    # Image level: 0.9 right, 0.2 wrong, 0.4 right, 0.6 and 0.7 wrong -> 2/5; studies: a right, b wrong.
    m = binary_metrics([1, 1, 0, 0, 0], [0.9, 0.2, 0.4, 0.6, 0.7], ["a", "a", "b", "b", "b"])
    assert m["image"]["accuracy"] == pytest.approx(0.4)
    assert m["study"]["n"] == 2 and m["study"]["accuracy"] == pytest.approx(0.5)
    assert m["study"]["confusion"] == [[0, 1], [0, 1]]
    assert m["study"]["kappa"] == pytest.approx(0.0)
    low, high = m["study"]["accuracy_ci"]
    assert 0.0 <= low <= 0.5 <= high <= 1.0


def test_report_by_hand():
    report = per_class_report([0, 0, 1, 1], [0, 1, 1, 1], ["normal", "abnormal"])
    assert report["normal"] == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3), "support": 2}
    assert report["abnormal"]["precision"] == pytest.approx(2 / 3) and report["abnormal"]["recall"] == 1.0
    text = format_report(report, 0.75)
    assert "precision    recall  f1-score   support" in text and "accuracy" in text


def test_bootstrap_is_seeded_and_brackets_the_estimate():
    values = [1] * 70 + [0] * 30
    a = bootstrap_interval(lambda v: float(v.mean()), values)
    assert a == bootstrap_interval(lambda v: float(v.mean()), values)
    assert a[0] < 0.7 < a[1] and a[1] - a[0] < 0.25


def test_multiclass():
    m = multiclass_metrics([0, 1, 2, 2], [[0.9, 0.05, 0.05], [0.1, 0.8, 0.1], [0.2, 0.7, 0.1], [0, 0, 1]],
                           ["a", "b", "c"])
    assert m["accuracy"] == 0.75 and m["confusion"] == [[1, 0, 0], [0, 1, 0], [0, 1, 1]]
