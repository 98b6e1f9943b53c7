"""Which labels look wrong, from out-of-fold probabilities: cleanlab's confident learning, never a copy of it.

`cleanlab.rank.get_label_quality_scores` gives each study a score in 0..1 (low: its label disagrees with
what models that never saw it predict); `cleanlab.filter.find_label_issues` flags the studies confident
learning estimates to be mislabelled, given the noise it estimates between the two classes.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from boneclf.errors import BonedbError

SCORE_METHOD = "self_confidence"


class Ranking(NamedTuple):
    scores: np.ndarray  # label quality per study, 0..1
    ranks: np.ndarray  # 1 = most suspicious; ties broken by input order
    flagged: np.ndarray  # bool: a likely label issue


def method_name() -> str:
    """What ranked an audit, as stored with it."""
    import cleanlab

    return f"cleanlab {cleanlab.__version__} {SCORE_METHOD}"


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
    scores = get_label_quality_scores(labels, pred_probs, method=SCORE_METHOD)
    # n_jobs=1: cleanlab's worker processes would fork a process that holds TensorFlow.
    flagged = find_label_issues(labels, pred_probs, n_jobs=1)
    order = np.lexsort((np.arange(len(scores)), scores))
    ranks = np.empty(len(scores), dtype=int)
    ranks[order] = np.arange(1, len(scores) + 1)
    return Ranking(np.asarray(scores, dtype=float), ranks, np.asarray(flagged, dtype=bool))
