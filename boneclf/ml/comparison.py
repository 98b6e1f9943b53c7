"""The paper's model comparison, for any runs: one row per run (its latest test evaluation, else validation)
with intervals, training time and model size, and a plain verdict on whether the intervals let anyone name a
winner. The seed paper ranked six architectures by point figures on one test set; two runs whose 95 %
intervals overlap are not told apart by that test set, and the verdict says so instead of crowning one."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine

from boneclf.results import Result
from boneclf.scores import BinaryMetrics, metrics_from_dict
from boneclf.store.runs import RunRecord, get_runs, latest_evaluations
from boneclf.vocabulary import BODYPART

from .evaluation import EvaluationResult
from .metrics import format_interval
from .run_folder import model_parameters


@dataclass
class ComparisonRow(Result):
    """One run in the paper's model comparison, scored on its latest test evaluation (else validation)."""

    run: int
    stage: str
    architecture: str
    parts: str
    image_size: int | None
    status: str
    scored_on: str
    data: str | None = None  # what it trained on: mura, folder, dicom or synthetic (None: split gone)
    accuracy: float | None = None  # stage 1: body-part accuracy; stage 2: image accuracy
    accuracy_ci: str = ""
    image_auc: float | None = None
    study_kappa: float | None = None
    kappa_ci: str = ""
    study_auc: float | None = None
    auc_ci: str = ""
    split: str = ""  # the split it was scored on, and that split's hash: verdicts compare runs of one test set
    split_hash: str = ""
    wall_minutes: float | None = None  # from start to finish, pauses between a Ctrl-C and its resume included
    model_parameters: int | None = None  # weights in its model.keras (None: no model file)
    interval: list[float] | None = None  # of the figure runs are ranked by: study kappa (stage 2), accuracy (1)


def comparison_row(run: RunRecord, evaluation: EvaluationResult | None) -> ComparisonRow:
    row = ComparisonRow(run.id, run.stage, run.architecture, ",".join(run.parts), run.image_spec.get("size"),
                        run.status, evaluation.subset if evaluation else ("val" if run.metrics else "none"),
                        run.data)
    overall = evaluation.overall if evaluation else metrics_from_dict(run.metrics)
    if isinstance(overall, BinaryMetrics):
        study = overall.study
        row.accuracy, row.image_auc = overall.image.accuracy, overall.image.auc
        row.study_kappa, row.study_auc = study.kappa, study.auc
        row.kappa_ci, row.auc_ci = format_interval(study.kappa_ci), format_interval(study.auc_ci)
        row.interval = study.kappa_ci
    elif overall is not None:
        row.accuracy = overall.accuracy
        row.accuracy_ci = format_interval(overall.accuracy_ci)
        row.interval = overall.accuracy_ci
    row.split, row.split_hash = run.split_name, run.split_hash
    if run.finished_at is not None:
        row.wall_minutes = round((run.finished_at - run.started_at).total_seconds() / 60, 2)
    row.model_parameters = model_parameters(run.artifact_dir)
    return row


def synthetic_rows_note(rows: list[ComparisonRow]) -> str | None:
    """One note under a comparison that holds runs trained on synthetic pictures (None: none does)."""
    synthetic = [str(row.run) for row in rows if row.data == "synthetic"]
    if not synthetic:
        return None
    return (f"run{'s' if len(synthetic) > 1 else ''} {', '.join(synthetic)} trained on synthetic pictures (drawn by "
            "`bonedb synth`): their figures describe no real radiographs")


def interval_verdict(rows: list[ComparisonRow]) -> list[str]:
    """Per test set (a split, as hashed) and stage, among two runs or more scored on test with an interval:
    can the best be told from the rest? Runs scored on different test sets are never compared."""
    verdicts = []
    tested = [r for r in rows if r.scored_on == "test" and r.interval]
    sets = sorted({(r.split, r.split_hash) for r in tested})
    for split, split_hash in sets:
        for stage, figure in ((BODYPART, "accuracy"), ("fracture", "study kappa")):
            scored = [r for r in tested if (r.split, r.split_hash) == (split, split_hash) and r.stage == stage]
            if len(scored) >= 2:
                verdicts.append(_verdict(scored, figure) + (f" (test subset of split {split})" if len(sets) > 1
                                                             else ""))
    if len(sets) > 1:
        verdicts.append("runs scored on different test sets are not compared with each other: their figures "
                        "come from different pictures")
    return verdicts


def _verdict(scored: list[ComparisonRow], figure: str) -> str:
    best = max(scored, key=lambda r: (_value(r), -r.run))
    low = best.interval[0] if best.interval else 0.0
    tied = [r for r in scored if r is not best and r.interval and r.interval[1] >= low]
    apart = [r for r in scored if r is not best and r not in tied]
    if not tied:
        return (f"run {best.run}'s {figure} interval lies above every other run's: on this test set it is the better "
                "model")
    if not apart:
        return (f"the {figure} intervals of {_named([best, *tied])} overlap: this test set does not tell them apart "
                f"(run {best.run} has the highest point figure, which is not enough)")
    return (f"no winner among {_named([best, *tied])}, whose {figure} intervals overlap; the interval of "
            f"{_named(apart)} lies below run {best.run}'s")


def _value(row: ComparisonRow) -> float:
    value = row.study_kappa if row.stage != BODYPART else row.accuracy
    return float("-inf") if value is None or value != value else value


def _named(rows: list[ComparisonRow]) -> str:
    """"run 3", or "runs 3, 4 and 5"."""
    ids = [str(r.run) for r in sorted(rows, key=lambda r: r.run)]
    return f"run {ids[0]}" if len(ids) == 1 else f"runs {', '.join(ids[:-1])} and {ids[-1]}"


def compare_runs(engine: Engine, run_ids: list[int]) -> list[ComparisonRow]:
    """The paper's model comparison: one row per run, with intervals (four queries however many runs)."""
    run_ids = list(dict.fromkeys(run_ids))  # a run named twice is one run
    runs = get_runs(engine, run_ids)
    tests = latest_evaluations(engine, run_ids, "test")
    others = latest_evaluations(engine, run_ids, None)
    rows = []
    for run in runs:
        record = tests.get(run.id) or others.get(run.id)
        rows.append(comparison_row(run, None if record is None else EvaluationResult.from_record(run, record)))
    return rows
