"""Which labels look wrong, from out-of-fold probabilities: cleanlab's confident learning, never a copy of it.

`cleanlab.rank.get_label_quality_scores` gives each study a score in 0..1 (low: its label disagrees with
what models that never saw it predict); `cleanlab.filter.find_label_issues` flags the studies confident
learning estimates to be mislabelled, given the noise it estimates between the two classes.

Scores are class-adjusted (cleanlab's `adjust_pred_probs`): each class's average confidence is subtracted
first. Without it, on a set that is mostly one class, a model that learned nothing still ranks every study of
the minority class first, and random label flips, which mostly land in the minority class, look found.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from boneclf.errors import BonedbError

from .metrics import roc_auc

SCORE_METHOD = "self_confidence"
ADJUSTED = True

# Below this out-of-fold AUROC (the fold models' probabilities against the labels they scored) the models have
# learned too little for their disagreement to mean much: the ranking is then near chance. BENCHMARKS.md,
# "Label audit on real radiographs", gives the AUROCs of planted and shuffled-label audits.
MIN_SEPARATION = 0.65


class Ranking(NamedTuple):
    scores: np.ndarray  # label quality per study, 0..1
    ranks: np.ndarray  # 1 = most suspicious; ties broken by input order
    flagged: np.ndarray  # bool: a likely label issue


def method_name() -> str:
    """What ranked an audit, as stored with it."""
    import cleanlab

    return f"cleanlab {cleanlab.__version__} {SCORE_METHOD}{', class-adjusted' if ADJUSTED else ''}"


def rank_labels(labels, probabilities) -> Ranking:
    """LABELS (0/1 per study) against PROBABILITIES of abnormal (out of fold, per study)."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    labels = np.asarray(labels, dtype=int)
    p = np.clip(np.asarray(probabilities, dtype=float), 1e-6, 1 - 1e-6)
    if len(labels) != len(p) or not len(labels):
        raise BonedbError("no out-of-fold probabilities to rank")
    if len(set(labels.tolist())) < 2:
        raise BonedbError("every audited study has the same label: there is nothing to tell apart")
    pred_probs = np.column_stack([1 - p, p])
    scores = get_label_quality_scores(labels, pred_probs, method=SCORE_METHOD, adjust_pred_probs=ADJUSTED)
    # n_jobs=1: cleanlab's worker processes would fork a process that holds TensorFlow.
    flagged = find_label_issues(labels, pred_probs, n_jobs=1)
    order = np.lexsort((np.arange(len(scores)), scores))
    ranks = np.empty(len(scores), dtype=int)
    ranks[order] = np.arange(1, len(scores) + 1)
    return Ranking(np.asarray(scores, dtype=float), ranks, np.asarray(flagged, dtype=bool))


def separation(labels, probabilities) -> float:
    """How well the out-of-fold probabilities tell the labels apart: AUROC, 0.5 for a model that learned nothing."""
    return roc_auc(labels, probabilities)


def caution(labels, probabilities) -> str | None:
    """A warning when the fold models learned too little for the ranking to mean much, else None."""
    value = separation(labels, probabilities)
    if value != value or value >= MIN_SEPARATION:  # NaN: one class only, refused elsewhere
        return None
    return (f"the fold models barely tell the labels apart (out-of-fold AUROC {value:.2f}, under "
            f"{MIN_SEPARATION}): this ranking is close to chance; train them longer or larger (--epochs, "
            "--image-size, --arch) before reviewing")
