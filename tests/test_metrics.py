"""Scores against values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from boneclf.ml.metrics import (
    average_precision,
    binary_metrics,
    bootstrap_interval,
    calibration_bins,
    cohen_kappa,
    confusion,
    expected_calibration_error,
    format_report,
    interval_caveat,
    multiclass_metrics,
    per_class_report,
    precision_recall_curve,
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
    assert m.image.accuracy == pytest.approx(0.4)
    assert m.study.n == 2 and m.study.accuracy == pytest.approx(0.5)
    assert m.study.confusion == [[0, 1], [0, 1]]
    assert m.study.kappa == pytest.approx(0.0)
    low, high = m.study.accuracy_ci
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
    assert m.accuracy == 0.75 and m.confusion == [[1, 0, 0], [0, 1, 0], [0, 1, 1]]


def test_precision_recall_by_hand():
    # Ranked: 0.9 (abnormal), 0.8 (normal), 0.7 (abnormal), 0.1 (normal).
    recalls, precisions = precision_recall_curve([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.1])
    assert recalls == pytest.approx([0, 0.5, 0.5, 1, 1])
    assert precisions == pytest.approx([1, 1, 0.5, 2 / 3, 0.5])
    # AP = 0.5 * 1 + 0.5 * 2/3 (recall only rises at the first and third thresholds).
    assert average_precision([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.1]) == pytest.approx(0.5 + 1 / 3)
    # Tied scores are one threshold, not two.
    assert precision_recall_curve([1, 0], [0.5, 0.5]) == ([0.0, 1.0], [1.0, 0.5])
    assert average_precision([1, 0], [0.5, 0.5]) == pytest.approx(0.5)
    assert math.isnan(average_precision([0, 0], [0.2, 0.3]))
    # A perfect ranking has AP 1 whatever the scores.
    assert average_precision([0, 1, 1], [0.1, 0.6, 0.55]) == pytest.approx(1.0)


def test_calibration_by_hand():
    truth, probs = [0, 0, 1, 1], [0.05, 0.15, 0.95, 1.0]
    table = calibration_bins(truth, probs)
    assert len(table) == 10 and [b.count for b in table] == [1, 1, 0, 0, 0, 0, 0, 0, 0, 2]
    assert table[9].mean_probability == pytest.approx(0.975) and table[9].observed_rate == 1.0
    assert math.isnan(table[5].mean_probability)
    # (1 * 0.05 + 1 * 0.15 + 2 * 0.025) / 4
    assert expected_calibration_error(truth, probs) == pytest.approx(0.0625)
    # Perfectly calibrated in every bin: probability 0.25 with 1 abnormal in 4.
    assert expected_calibration_error([1, 0, 0, 0], [0.25] * 4) == pytest.approx(0.0)
    assert math.isnan(expected_calibration_error([], []))


def test_interval_caveats():
    assert interval_caveat(200, 80, [0.5, 0.7]) == ""
    assert "too few" in interval_caveat(12, 5, [0.2, 0.9])
    assert "too few" in interval_caveat(200, 3, [0.2, 0.9])
    assert "all normal" in interval_caveat(40, 0) and interval_caveat(1, 1).startswith("1 study, abnormal")
    assert "zero width" in interval_caveat(200, 80, [1.0, 1.0])
    assert interval_caveat(0, 0) == "no studies"


def test_bootstrap_over_leak_groups_is_as_wide_as_the_groups_are_few():
    """22 pictures, each copied 20 times, as in a published set whose test is mostly copies: an interval
    over 440 "independent" studies is narrow; over the 22 groups it is as wide as 22 cases allow."""
    rng = np.random.default_rng(3)
    truth = rng.integers(0, 2, 22)
    right = rng.random(22) < 0.7  # the model gets 70 % of the pictures right
    probs = np.where(right, truth, 1 - truth) * 0.8 + 0.1
    labels, scores = np.repeat(truth, 20), np.repeat(probs, 20)
    studies = [f"s{i}" for i in range(440)]  # a folder set: one study per image
    groups = [f"g{i // 20}" for i in range(440)]
    naive = binary_metrics(labels, scores, studies).study.accuracy_ci
    grouped = binary_metrics(labels, scores, studies, groups=groups).study
    assert naive is not None and grouped.accuracy_ci is not None
    assert naive[1] - naive[0] < 0.1
    assert grouped.accuracy_ci[1] - grouped.accuracy_ci[0] > 0.3
    assert grouped.bootstrap_units == 22
