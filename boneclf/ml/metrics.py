"""Scores, in plain numpy: image-level metrics, MURA's study-level protocol, bootstrap intervals,
precision-recall curves and calibration.

MURA is scored per study: a study's probability is the mean of its images' probabilities,
abnormal when above 0.5, and the headline figure is Cohen's kappa between those decisions and
the radiologists' labels. On a few hundred studies any figure needs its confidence interval.
"""

from __future__ import annotations

from collections import defaultdict
from typing import NamedTuple

import numpy as np

from boneclf.results import plural
from boneclf.scores import BinaryMetrics, ClassScores, ImageScores, MulticlassMetrics, Report, StudyScores
from boneclf.vocabulary import FRACTURE_CLASSES

THRESHOLD = 0.5
BOOTSTRAP_ROUNDS = 1000
CALIBRATION_BINS = 10
# Below these a bootstrap interval over studies says more about the resampling than about the model.
MIN_STUDIES_FOR_INTERVAL = 30
MIN_STUDIES_PER_CLASS = 5


def confusion(y_true, y_pred, k: int) -> np.ndarray:
    """k x k counts, rows the truth, columns the prediction."""
    matrix = np.zeros((k, k), dtype=np.int64)
    np.add.at(matrix, (np.asarray(y_true, int), np.asarray(y_pred, int)), 1)
    return matrix


def cohen_kappa(y_true, y_pred, k: int = 2) -> float:
    matrix = confusion(y_true, y_pred, k).astype(float)
    total = matrix.sum()
    if total == 0:
        return float("nan")
    observed = np.trace(matrix) / total
    expected = (matrix.sum(0) * matrix.sum(1)).sum() / total**2
    return 1.0 if expected == 1 else float((observed - expected) / (1 - expected))


def roc_auc(y_true, scores) -> float:
    """Area under the ROC curve as the Mann-Whitney statistic (ties count half)."""
    y_true, scores = np.asarray(y_true, int), np.asarray(scores, float)
    positives, negatives = scores[y_true == 1], scores[y_true == 0]
    if len(positives) == 0 or len(negatives) == 0:
        return float("nan")
    order = np.argsort(np.concatenate([positives, negatives]), kind="mergesort")
    ranks = np.empty(len(order))
    values = np.concatenate([positives, negatives])[order]
    # Average ranks over ties.
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and values[j + 1] == values[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    rank_sum = ranks[: len(positives)].sum()
    return float((rank_sum - len(positives) * (len(positives) + 1) / 2) / (len(positives) * len(negatives)))


def roc_curve(y_true, scores) -> tuple[list[float], list[float]]:
    """(false positive rates, true positive rates) over every threshold, for plotting."""
    y_true, scores = np.asarray(y_true, int), np.asarray(scores, float)
    order = np.argsort(-scores, kind="mergesort")
    tps = np.cumsum(y_true[order])
    fps = np.cumsum(1 - y_true[order])
    p, n = max(int(y_true.sum()), 1), max(int((1 - y_true).sum()), 1)
    return [0.0, *(fps / n).tolist()], [0.0, *(tps / p).tolist()]


def per_class_report(y_true, y_pred, class_names: list[str]) -> Report:
    """precision, recall, f1 and support per class, with macro and weighted averages."""
    matrix = confusion(y_true, y_pred, len(class_names))
    report: Report = {}
    measures: list[tuple[float, float, float]] = []  # (precision, recall, f1) per class, for the averages
    for index, name in enumerate(class_names):
        tp = matrix[index, index]
        predicted, actual = matrix[:, index].sum(), matrix[index].sum()
        precision = tp / predicted if predicted else 0.0
        recall = tp / actual if actual else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        report[name] = ClassScores(precision=float(precision), recall=float(recall), f1=float(f1), support=int(actual))
        measures.append((float(precision), float(recall), float(f1)))
    supports = np.array([report[n]["support"] for n in class_names], float)
    for average, weights in (("macro avg", np.ones(len(class_names))), ("weighted avg", supports)):
        total = weights.sum() or 1.0
        precision, recall, f1 = (float(sum(row[m] * w for row, w in zip(measures, weights)) / total)
                                 for m in range(3))
        report[average] = ClassScores(precision=precision, recall=recall, f1=f1, support=int(supports.sum()))
    return report


def format_report(report: Report, accuracy: float | None) -> str:
    """The classification report laid out as in the seed paper's tables (and scikit-learn's)."""
    names = [n for n in report if not n.endswith("avg")]
    width = max(12, *(len(n) for n in names))
    lines = [f"{'':>{width}}  precision    recall  f1-score   support", ""]
    for name in names:
        lines.append(_report_line(name, report[name], width))
    total = report["macro avg"]["support"]
    shown = float("nan") if accuracy is None else accuracy
    lines += ["", f"{'accuracy':>{width}}  {'':9} {'':9} {shown:9.2f} {total:9d}"]
    for name in ("macro avg", "weighted avg"):
        lines.append(_report_line(name, report[name], width))
    return "\n".join(lines)


def _report_line(name: str, r: ClassScores, width: int) -> str:
    return f"{name:>{width}}  {r['precision']:9.2f} {r['recall']:9.2f} {r['f1']:9.2f} {r['support']:9d}"


def study_scores(studies, labels, probabilities) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(study keys, study labels, study probabilities): the mean over each study's images."""
    grouped: dict[str, list[float]] = defaultdict(list)
    truth: dict[str, int] = {}
    for study, label, probability in zip(studies, labels, probabilities):
        grouped[study].append(float(probability))
        truth[study] = int(label)
    keys = sorted(grouped)
    return keys, np.array([truth[k] for k in keys]), np.array([np.mean(grouped[k]) for k in keys])


def bootstrap_interval(statistic, *arrays, rounds: int = BOOTSTRAP_ROUNDS, seed: int = 0,
                       clusters=None) -> list[float]:
    """95% percentile interval of statistic(*arrays) over resamples of the rows (studies), or, with
    `clusters` (one key per row), over resamples of whole clusters: rows that are not independent (copies
    of one picture, one patient's studies) are drawn together, as they would come from a new sample."""
    n = len(arrays[0])
    if n == 0:
        return [float("nan"), float("nan")]
    rng = np.random.default_rng(seed)
    members = None
    if clusters is not None:
        by_cluster: dict = defaultdict(list)
        for row, key in enumerate(clusters):
            by_cluster[key].append(row)
        members = [np.array(rows) for _, rows in sorted(by_cluster.items(), key=lambda kv: str(kv[0]))]
    values = []
    for _ in range(rounds):
        if members is None:
            index = rng.integers(0, n, n)
        else:
            index = np.concatenate([members[k] for k in rng.integers(0, len(members), len(members))])
        value = statistic(*(np.asarray(a)[index] for a in arrays))
        if not np.isnan(value):
            values.append(value)
    if not values:
        return [float("nan"), float("nan")]
    return [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))]


def binary_metrics(labels, probabilities, studies, *, with_intervals: bool = True, groups=None) -> BinaryMetrics:
    """Image-level and study-level scores for a normal/abnormal model. GROUPS (one leak-group key per
    image, optional) makes the intervals resample leak groups of studies instead of single studies."""
    labels, probabilities = np.asarray(labels, int), np.asarray(probabilities, float)
    predictions = (probabilities > THRESHOLD).astype(int)
    accuracy = float((predictions == labels).mean()) if len(labels) else float("nan")
    image = ImageScores(int(len(labels)), accuracy, roc_auc(labels, probabilities), cohen_kappa(labels, predictions),
                        confusion(labels, predictions, 2).tolist(),
                        per_class_report(labels, predictions, FRACTURE_CLASSES))
    keys, study_labels, study_probs = study_scores(studies, labels, probabilities)
    study_pred = (study_probs > THRESHOLD).astype(int)
    study = StudyScores(len(keys), float((study_pred == study_labels).mean()) if keys else float("nan"),
                        cohen_kappa(study_labels, study_pred), roc_auc(study_labels, study_probs),
                        confusion(study_labels, study_pred, 2).tolist())
    clusters = None
    if groups is not None:
        group_of = dict(zip(studies, groups))  # a study's images share a leak group
        clusters = [group_of[k] for k in keys]
        study.bootstrap_units = len(set(clusters))
    if with_intervals:
        study.accuracy_ci = bootstrap_interval(lambda y, p: float(((p > THRESHOLD) == y).mean()),
                                               study_labels, study_probs, clusters=clusters)
        study.kappa_ci = bootstrap_interval(lambda y, p: cohen_kappa(y, (p > THRESHOLD).astype(int)),
                                            study_labels, study_probs, clusters=clusters)
        study.auc_ci = bootstrap_interval(roc_auc, study_labels, study_probs, clusters=clusters)
    return BinaryMetrics(image, study)


def multiclass_metrics(labels, probabilities, class_names: list[str]) -> MulticlassMetrics:
    """Stage 1: which body part. Accuracy, confusion matrix and per-part report."""
    labels = np.asarray(labels, int)
    predictions = np.asarray(probabilities).argmax(axis=1) if len(labels) else np.array([], int)
    accuracy = float((predictions == labels).mean()) if len(labels) else float("nan")
    return MulticlassMetrics(
        int(len(labels)), accuracy, bootstrap_interval(lambda y, p: float((p == y).mean()), labels, predictions),
        cohen_kappa(labels, predictions, len(class_names)), confusion(labels, predictions, len(class_names)).tolist(),
        class_names, per_class_report(labels, predictions, class_names))


def format_interval(interval) -> str:
    """A 95% interval for people; empty where none was computed."""
    if not interval or any(v is None or v != v for v in interval):
        return ""
    return f"{interval[0]:.3f} to {interval[1]:.3f}"


def precision_recall_curve(y_true, scores) -> tuple[list[float], list[float]]:
    """(recalls, precisions) at every distinct threshold, highest first, from (0, 1): for plotting.

    Tied scores move together (one point per distinct score). Empty lists without positives.
    """
    y_true, scores = np.asarray(y_true, int), np.asarray(scores, float)
    positives = int(y_true.sum())
    if positives == 0:
        return [], []
    order = np.argsort(-scores, kind="mergesort")
    ranked, truth = scores[order], y_true[order]
    # The last index of each run of equal scores: a threshold takes all of them or none.
    ends = np.r_[np.flatnonzero(np.diff(ranked)), len(ranked) - 1]
    tps = np.cumsum(truth)[ends]
    predicted = ends + 1
    return [0.0, *(tps / positives).tolist()], [1.0, *(tps / predicted).tolist()]


def average_precision(y_true, scores) -> float:
    """Area under the precision-recall curve as the step sum over thresholds, sum (R_k - R_k-1) P_k."""
    recalls, precisions = precision_recall_curve(y_true, scores)
    if not recalls:
        return float("nan")
    return float(np.sum(np.diff(recalls) * np.asarray(precisions[1:])))


class CalibrationBin(NamedTuple):
    """One bin of a reliability diagram: predictions in [low, high), the last bin closed."""

    low: float
    high: float
    count: int  # type: ignore[assignment]  # a field named as people say it, over tuple.count
    mean_probability: float  # NaN when empty
    observed_rate: float  # share of abnormal cases; NaN when empty


def calibration_bins(y_true, probabilities, bins: int = CALIBRATION_BINS) -> list[CalibrationBin]:
    """Equal-width bins over [0, 1]: mean predicted probability against the observed rate of abnormal."""
    y_true, probabilities = np.asarray(y_true, float), np.asarray(probabilities, float)
    index = np.minimum((probabilities * bins).astype(int), bins - 1)
    result = []
    for b in range(bins):
        inside = index == b
        count = int(inside.sum())
        mean = float(probabilities[inside].mean()) if count else float("nan")
        rate = float(y_true[inside].mean()) if count else float("nan")
        result.append(CalibrationBin(b / bins, (b + 1) / bins, count, mean, rate))
    return result


def expected_calibration_error(y_true, probabilities, bins: int = CALIBRATION_BINS) -> float:
    """ECE: the gap between predicted probability and observed rate, averaged over bins by their counts."""
    table = calibration_bins(y_true, probabilities, bins)
    total = sum(b.count for b in table)
    if total == 0:
        return float("nan")
    return float(sum(b.count * abs(b.mean_probability - b.observed_rate) for b in table if b.count) / total)


def interval_caveat(studies: int, abnormal: int, interval=None) -> str:
    """Why a study-level interval cannot be trusted, in words; "" when it can."""
    normal = studies - abnormal
    counted = f"{studies} {'study' if studies == 1 else 'studies'}"
    if studies == 0:
        return "no studies"
    if abnormal == 0 or normal == 0:
        which = "normal" if abnormal == 0 else "abnormal"
        return f"{counted}, {'all ' if studies > 1 else ''}{which}: with one class, kappa and AUC mean nothing"
    if studies < MIN_STUDIES_FOR_INTERVAL or min(abnormal, normal) < MIN_STUDIES_PER_CLASS:
        return f"only {counted} ({abnormal} abnormal): too few for the interval to mean anything"
    if interval and all(v is not None and v == v for v in interval) and interval[0] == interval[1]:
        return "the bootstrap interval has zero width: too few distinct resamples to mean anything"
    return ""


def effective_size(studies: int, leak_groups: int | None = None) -> str:
    """What a study-level interval rests on, in words: "387 studies in 74 independent leak groups" when
    copies of one picture tie studies together (the bootstrap resamples whole groups), else "387 studies"."""
    counted = plural(studies, "study", "studies")
    if leak_groups is None or leak_groups >= studies:
        return counted
    return f"{counted} in {plural(leak_groups, 'independent leak group')}"
