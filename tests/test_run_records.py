"""Reading runs without the trainer: what evaluation loads, how many queries a comparison costs, and metrics
that are typed in memory and unchanged in the database."""

from __future__ import annotations

import subprocess
import sys

import pytest
from sqlalchemy import event

from boneclf.data.ingest import ingest_mura
from boneclf.data.splits import SplitOptions, create_split
from boneclf.ml.comparison import ComparisonRow, compare_runs, interval_verdict
from boneclf.ml.metrics import binary_metrics, multiclass_metrics
from boneclf.scores import BinaryMetrics, MulticlassMetrics, metrics_from_dict
from boneclf.store.queries import get_split
from boneclf.store.runs import create_run, save_evaluation, set_status
from boneclf.vocabulary import BODY_PARTS


def test_evaluation_and_the_run_folder_load_without_the_trainer_or_keras(tmp_path):
    # Run from an empty folder: from the checkout, `python -c` would import the source tree's boneclf, which
    # (installed, not editable) has no boneclf.cli: setuptools maps that package from cli/.
    code = ("import sys; import boneclf.ml.evaluation, boneclf.ml.run_folder, boneclf.cli.runs; "
            "print(sorted(m for m in ('boneclf.ml.training', 'boneclf.ml.job', 'keras', 'tensorflow') "
            "if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=tmp_path).stdout.strip()
    assert loaded == "[]"


def _runs(engine, count: int) -> list[int]:
    with engine.connect() as conn:
        split = get_split(conn, "s")
    ids = []
    for n in range(count):
        run_id = create_run(engine, stage="fracture", parts=("hand",), architecture="cnn",
                            parameters={"stage": "fracture", "split": "s"}, image_spec={"size": 32}, split=split,
                            label_version=None, tf_version="-", runs_dir="runs")
        metrics = binary_metrics([0, 1, 1, 0], [0.2, 0.8, 0.4, 0.1], ["a", "b", "c", "d"], with_intervals=False)
        set_status(engine, run_id, "finished", metrics=metrics.to_dict())
        if n % 2 == 0:  # half evaluated on test; the rest are scored on their validation
            scored = binary_metrics([0, 1, 1, 0], [0.3, 0.9, 0.7, 0.2], ["a", "b", "c", "d"])
            save_evaluation(engine, run_id, "test", {"overall": scored.to_dict(), "per_part": {}},
                            split_hash=split.content_hash, labels="pinned", label_version=None)
        ids.append(run_id)
    return ids


def _queries(engine, action) -> int:
    seen = []

    def count(*_args):
        seen.append(1)

    event.listen(engine, "before_cursor_execute", count)
    try:
        action()
    finally:
        event.remove(engine, "before_cursor_execute", count)
    return len(seen)


def test_comparing_runs_costs_the_same_queries_for_one_run_or_many(engine, mura):
    ingest_mura(engine, mura)
    create_split(engine, "s", SplitOptions("mura-v1.1", BODY_PARTS, test_from="carve"))
    ids = _runs(engine, 6)
    one = _queries(engine, lambda: compare_runs(engine, ids[:1]))
    many = _queries(engine, lambda: compare_runs(engine, ids))
    assert one == many == 4  # the runs, what they trained on, their test and their other evaluations
    rows = compare_runs(engine, ids)
    assert [r.run for r in rows] == ids and [r.scored_on for r in rows] == ["test", "val"] * 3
    assert {r.data for r in rows} == {"synthetic"}, "a comparison says what each run trained on"
    assert rows[0].study_kappa == pytest.approx(1.0) and rows[0].kappa_ci
    assert rows[0].wall_minutes is not None and rows[0].model_parameters is None, "no model file was written"
    assert [r.run for r in compare_runs(engine, [ids[0], ids[0]])] == [ids[0]], "a run named twice is one run"
    with pytest.raises(Exception, match=f"no training run {ids[-1] + 1}"):
        compare_runs(engine, [ids[0], ids[-1] + 1])


def _scored(run: int, kappa: float, interval: list[float], split: str = "s") -> ComparisonRow:
    return ComparisonRow(run, "fracture", "cnn", "humerus", 64, "finished", "test", study_kappa=kappa,
                         interval=interval, split=split, split_hash=f"hash of {split}")


def test_a_comparison_names_a_winner_only_when_the_intervals_allow_it():
    overlapping = interval_verdict([_scored(3, 0.45, [0.30, 0.60]), _scored(4, 0.40, [0.25, 0.55])])
    assert overlapping == ["the study kappa intervals of runs 3 and 4 overlap: this test set does not tell them apart "
                           "(run 3 has the highest point figure, which is not enough)"]
    apart = interval_verdict([_scored(3, 0.70, [0.62, 0.78]), _scored(4, 0.40, [0.25, 0.55])])
    assert apart == ["run 3's study kappa interval lies above every other run's: on this test set it is the better "
                     "model"]
    mixed = interval_verdict([_scored(3, 0.70, [0.60, 0.80]), _scored(4, 0.65, [0.55, 0.75]),
                              _scored(5, 0.20, [0.05, 0.35])])
    assert mixed == ["no winner among runs 3 and 4, whose study kappa intervals overlap; the interval of run 5 lies "
                     "below run 3's"]
    # Runs scored on different test sets are never compared, however far apart their intervals.
    assert interval_verdict([_scored(3, 0.70, [0.62, 0.78], "a"), _scored(4, 0.40, [0.25, 0.55], "b")]) == [
        "runs scored on different test sets are not compared with each other: their figures come from different "
        "pictures"]
    # Validation figures carry no interval and one run compares with nothing: no verdict.
    assert interval_verdict([_scored(3, 0.7, [0.6, 0.8])]) == []
    assert interval_verdict([_scored(3, 0.7, [0.6, 0.8]), ComparisonRow(4, "fracture", "cnn", "humerus", 64,
                                                                        "finished", "val", study_kappa=0.9)]) == []


def test_metrics_are_typed_and_stored_as_before():
    binary = binary_metrics([1, 1, 0, 0, 0], [0.9, 0.2, 0.4, 0.6, 0.7], ["a", "a", "b", "b", "b"], groups=list("xxyyy"))
    stored = binary.to_dict()
    assert list(stored) == ["image", "study"]
    assert list(stored["image"]) == ["n", "accuracy", "auc", "kappa", "confusion", "report"]
    assert list(stored["study"]) == ["n", "accuracy", "kappa", "auc", "confusion", "bootstrap_units", "accuracy_ci",
                                     "kappa_ci", "auc_ci"]
    assert stored["image"]["report"]["normal"] == binary.image.report["normal"]
    assert BinaryMetrics.from_dict(stored) == binary and metrics_from_dict(stored) == binary
    validation = binary_metrics([1, 0], [0.9, 0.1], ["a", "b"], with_intervals=False)
    validation.skipped_images = 2
    assert list(validation.to_dict()) == ["image", "study", "skipped_images"]
    assert "kappa_ci" not in validation.to_dict()["study"] and validation.study.kappa_ci is None

    multi = multiclass_metrics([0, 1, 2], [[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8]], ["a", "b", "c"])
    assert list(multi.to_dict()) == ["n", "accuracy", "accuracy_ci", "kappa", "confusion", "class_names", "report"]
    assert metrics_from_dict(multi.to_dict()) == multi and isinstance(metrics_from_dict(multi.to_dict()),
                                                                       MulticlassMetrics)
    # What older bonedb stored (fewer keys, NaN stored as null) still reads.
    old = metrics_from_dict({"study": {"kappa": None, "auc": 0.5}})
    assert isinstance(old, BinaryMetrics) and old.study.auc == 0.5 and old.image.n == 0
    assert metrics_from_dict(None) is None and metrics_from_dict({}) is None
