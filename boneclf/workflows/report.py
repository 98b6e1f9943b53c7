"""`bonedb report`: one self-contained HTML file about one or more runs, for a radiologist and an ML engineer.

Sections: how to read it (by what the data is: MURA, a folder set, synthetic), runs that could not
be reported (with their errors), dataset and split (its leaks across subsets and the copies inside
its test subset, with thumbnails), a comparison table, then per run its provenance, learning curves
and, on the test subset: per-part table (study-level kappa with bootstrap intervals and what each
rests on, beside the MURA baseline on MURA's data, a note where a part has too few studies), a
forest plot of kappa, study-level ROC, precision-recall and calibration per part and overall,
confusion matrices, and a Grad-CAM gallery stratified by body part and outcome.

This module gathers what the page shows; `report_figures` draws the pictures, `report_gallery`
computes the Grad-CAM tiles, and the Jinja2 templates in `templates/` (autoescaped) lay out the
page: plain HTML, inline PNGs, no JavaScript and no request to anything, so it opens offline. The
file is written whole or not at all; what could not be reported is listed in it and returned, so
that `bonedb report` can exit non-zero.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, NamedTuple

import jinja2
from sqlalchemy import Engine

from boneclf import __version__
from boneclf.clock import utc_now
from boneclf.data.splits import SUBSETS, SplitSummary, describe_parameters, split_summary
from boneclf.errors import BonedbError
from boneclf.files import atomic_write
from boneclf.ml.comparison import ComparisonRow, comparison_row, interval_verdict
from boneclf.ml.evaluation import EvaluationResult, evaluate_run, latest_result, predictions_file
from boneclf.ml.metrics import MIN_STUDIES_FOR_INTERVAL, effective_size, interval_caveat
from boneclf.results import Result, fmt, plural
from boneclf.scores import BinaryMetrics, MulticlassMetrics
from boneclf.store.provenance import describe_version
from boneclf.store.queries import DatasetFacts, split_dataset
from boneclf.store.runs import RunRecord, get_run
from boneclf.vocabulary import BODYPART, FRACTURE_CLASSES, LABEL_WORDS

from .report_figures import (
    PART_COLOURS,
    KappaRow,
    calibration_panels,
    confusion_picture,
    forest_plot,
    learning_curves,
    learning_figure,
    part_colour,
    pr_panels,
    roc_panels,
    study_sets,
)
from .report_gallery import Gallery, gallery, gallery_picks
from .report_leaks import LeakList, split_leaks

__all__ = ["PART_COLOURS", "KappaRow", "ReportProblem", "ReportResult", "build_report", "forest_plot",
           "gallery_picks", "kappa_rows", "learning_figure", "part_colour"]

# The MURA paper's baseline (DenseNet-169), study-level kappa on its test set (Rajpurkar et al. 2017, table 2).
MURA_BASELINE_KAPPA = {
    "elbow": 0.710, "finger": 0.389, "forearm": 0.737, "hand": 0.851, "humerus": 0.600, "shoulder": 0.729,
    "wrist": 0.931, "overall": 0.705,
}
# What each kind of data is, in a few words: the report never lets synthetic data pass for radiographs.
DATA_WORDS = {"mura": "MURA radiographs, labelled by radiologists",
              "folder": "a class-folder set, labelled by its folder names",
              "dicom": "radiographs from a PACS export, labelled as its label map says",
              "synthetic": "synthetic: drawn by bonedb synth, not radiographs of people"}
AVERAGE_NAMES = {"macro avg": "mean over parts", "weighted avg": "mean weighted by images"}
# A cell that reads as a figure (right-aligned): a number, a number with its interval, or "n/a".
NUMERAL = re.compile(r"-?[0-9.]+(?: \(-?[0-9.]+ to -?[0-9.]+\))?|n/a")


class ReportProblem(NamedTuple):
    """A requested run the report could not show in full, and why."""

    run_id: int
    status: str  # the run's status, or "unknown" when there is no such run
    error: str


@dataclass
class ReportResult(Result):
    path: str
    runs: list[int] = field(default_factory=list)  # reported in full
    problems: list[ReportProblem] = field(default_factory=list)
    datasets: dict[str, str] = field(default_factory=dict)  # name -> mura, folder or synthetic

    computed = ("complete", "synthetic")

    @property
    def synthetic(self) -> list[str]:
        """The reported datasets that are synthetic."""
        return sorted(name for name, nature in self.datasets.items() if nature == "synthetic")

    @property
    def complete(self) -> bool:
        return not self.problems


# -- What the templates show ------------------------------------------------------------------------------
@dataclass
class Table:
    """A table of cells formatted for people; `summary` rows (averages, totals) go below a line."""

    columns: list[str]
    rows: list[list[str]]
    summary: list[list[str]] = field(default_factory=list)
    caption: str = ""
    groups: list[tuple[str, int]] = field(default_factory=list)  # (title, columns spanned) above the header


def cell(value: Any, digits: int = 3) -> str:
    """A table cell: floats to DIGITS decimals, "n/a" where nothing could be computed."""
    if value is None or isinstance(value, float):
        return fmt(value, digits)
    return str(value)


def with_interval(value: float | None, interval: str) -> str:
    """A figure with its 95% interval in brackets, for tables."""
    text = fmt(value)
    return f"{text} ({interval})" if interval and text != "n/a" else text


@dataclass
class SplitView:
    name: str
    data: DatasetFacts | None = None
    summary: SplitSummary | None = None
    error: str = ""
    labels: str = ""  # the pinned labels' version, in words
    parameters: str = ""
    counts: Table | None = None
    leaks: list[LeakList] = field(default_factory=list)  # across subsets, and copies inside the test subset


@dataclass
class BodypartView:
    accuracy: float | None
    interval: list
    images: int
    kappa: float | None
    table: Table
    confusion: str


@dataclass
class Curves:
    roc: str
    pr: str
    calibration: str


@dataclass
class FractureView:
    table: Table
    caveats: list[KappaRow]
    forest: str
    baseline: bool  # the MURA paper's kappas are drawn beside the parts
    image_confusion: str
    study_confusion: str
    curves: Curves | None = None
    gallery: Gallery | None = None


@dataclass
class RunView:
    run: RunRecord
    data: DatasetFacts
    evaluation: EvaluationResult | None
    stage_name: str
    covered: str  # the body parts, in a few words
    trained_labels: str
    scored_labels: str
    image_input: str
    learning: str | None = None
    bodypart: BodypartView | None = None
    fracture: FractureView | None = None


# -- The report -------------------------------------------------------------------------------------------
def build_report(engine: Engine, run_ids: list[int], out: Path) -> ReportResult:
    """Write the report on RUN_IDS to OUT. Runs that cannot be reported in full (no such run, not finished,
    files missing) are shown as far as possible and listed, in the report and in the result."""
    result = ReportResult(str(out))
    runs: list[RunRecord] = []
    for run_id in dict.fromkeys(run_ids):
        try:
            runs.append(get_run(engine, run_id))
        except BonedbError as exc:
            result.problems.append(ReportProblem(run_id, "unknown", str(exc)))
    with engine.connect() as conn:
        data = {run.split_name: split_dataset(conn, run.split_id) for run in runs}
    result.datasets = {facts.name: facts.nature for facts in data.values()}
    comparison, views = [], []
    for run in runs:
        evaluation = _test_evaluation(engine, run, result.problems)
        comparison.append((comparison_row(run, evaluation), _tested_on(run, evaluation)))
        problems_before = len(result.problems)
        views.append(_run_view(engine, run, data[run.split_name], evaluation, result.problems))
        if evaluation is not None and len(result.problems) == problems_before:
            result.runs.append(run.id)
    title = f"bonedb report: run{'s' if len(run_ids) > 1 else ''} {', '.join(map(str, run_ids))}"
    if result.synthetic:
        title += " (synthetic data)"
    page = _templates().get_template("report.html").render(
        title=title, written=utc_now().strftime("%Y-%m-%d %H:%M UTC"), version=__version__,
        problems=_problems_table(result.problems), comparison=_comparison_table(comparison),
        verdicts=interval_verdict([row for row, _ in comparison]),
        splits=[_split_view(engine, name, data[name]) for name in sorted(data)], runs=views,
        natures={facts.nature for facts in data.values()}, synthetic=result.synthetic, colours=PART_COLOURS,
        data_words=DATA_WORDS)
    atomic_write(Path(out), page)
    return result


@cache
def _templates() -> jinja2.Environment:
    """The report's templates (boneclf/workflows/templates), autoescaped as the web's are."""
    environment = jinja2.Environment(loader=jinja2.PackageLoader("boneclf.workflows", "templates"),
                                     autoescape=True, undefined=jinja2.StrictUndefined,  # a misspelt field fails
                                     trim_blocks=True, lstrip_blocks=True)
    environment.globals.update(fmt=fmt)
    environment.tests["numeral"] = lambda text: bool(NUMERAL.fullmatch(str(text)))
    return environment


def _test_evaluation(engine: Engine, run: RunRecord, problems: list[ReportProblem]) -> EvaluationResult | None:
    """The run's latest test evaluation, evaluating it when it has none; None (and a problem) if it cannot be."""
    if run.status != "finished":
        problems.append(ReportProblem(run.id, run.status, _not_finished(run)))
        return None
    try:
        return latest_result(engine, run, "test") or evaluate_run(engine, run.id, "test")
    except BonedbError as exc:
        problems.append(ReportProblem(run.id, run.status, str(exc)))
        return None


def _not_finished(run: RunRecord) -> str:
    if run.status == "running":
        return "still running: report it when it has finished"
    advice = f"resume it with `bonedb train --resume {run.id}`"
    if run.error:
        return f"{run.error} ({advice})"
    return f"{run.status} without an error message ({advice})"


def _stage_name(stage: str) -> str:
    return "body part (stage 1)" if stage == BODYPART else "normal or abnormal (stage 2)"


def _problems_table(problems: list[ReportProblem]) -> Table | None:
    if not problems:
        return None
    return Table(["Run", "Status", "Error"], [[str(p.run_id), p.status, p.error] for p in problems])


def _tested_on(run: RunRecord, evaluation: EvaluationResult | None) -> str:
    """The effective size of the subset a comparison row's intervals come from, in words."""
    overall = evaluation.overall if evaluation else run.scores
    if isinstance(overall, BinaryMetrics):
        return effective_size(overall.study.n, overall.study.bootstrap_units)
    return plural(overall.n, "image") if overall is not None else "n/a"


def _comparison_table(rows: list[tuple[ComparisonRow, str]]) -> Table:
    columns = ["Run", "Stage", "Architecture", "Body parts", "Image size", "Status", "Scored on",
               "Accuracy (95% CI)", "Image AUC", "Study kappa (95% CI)", "Study AUC (95% CI)", "Intervals rest on",
               "Wall time (min)", "Parameters"]
    cells = []
    for r, size in rows:
        parts = r.parts.replace(",", ", ") if r.parts.count(",") < 3 else f"all {r.parts.count(',') + 1}"
        cells.append([str(r.run), "body part" if r.stage == BODYPART else "normal/abnormal", r.architecture, parts,
                      cell(r.image_size, 0), r.status, r.scored_on, with_interval(r.accuracy, r.accuracy_ci),
                      cell(r.image_auc), with_interval(r.study_kappa, r.kappa_ci),
                      with_interval(r.study_auc, r.auc_ci), size, cell(r.wall_minutes, 1),
                      f"{r.model_parameters:,}" if r.model_parameters is not None else "n/a"])
    return Table(columns, cells)


def _split_view(engine: Engine, name: str, data: DatasetFacts) -> SplitView:
    try:
        summary = split_summary(engine, name)
    except BonedbError as exc:
        return SplitView(name, data, error=str(exc))
    return SplitView(name, data, summary, labels=describe_version(summary.label_version),
                     parameters=describe_parameters(summary.parameters), counts=_counts_table(summary),
                     leaks=split_leaks(engine, name))


def _counts_table(summary: SplitSummary) -> Table | None:
    """Studies by label and images, per body part (rows) and subset (column groups), totals below."""
    if not summary.counts:
        return None
    subsets = [s for s in SUBSETS if any(c.subset == s for c in summary.counts)]
    measures = (f"{LABEL_WORDS[0]} studies", f"{LABEL_WORDS[1]} studies", "images")
    totals: dict[tuple[str, str, str], int] = {}
    for c in summary.counts:
        key = (c.part, c.subset)
        totals[(*key, measures[c.label])] = totals.get((*key, measures[c.label]), 0) + c.studies
        totals[(*key, "images")] = totals.get((*key, "images"), 0) + c.images
    parts = sorted({c.part for c in summary.counts})
    rows = [[part, *(str(totals.get((part, s, m), 0)) for s in subsets for m in measures)] for part in parts]
    sums = [str(sum(totals.get((part, s, m), 0) for part in parts)) for s in subsets for m in measures]
    return Table(["Body part", *(m for _ in subsets for m in measures)], rows, [["all parts", *sums]],
                 caption="Studies (by label) and images per body part and subset; totals below the line. A patient's "
                         "studies all lie in one subset.",
                 groups=[("", 1), *((s, len(measures)) for s in subsets)])


# -- One run ----------------------------------------------------------------------------------------------
def _run_view(engine: Engine, run: RunRecord, data: DatasetFacts, evaluation: EvaluationResult | None,
              problems: list[ReportProblem]) -> RunView:
    spec = run.image_spec
    view = RunView(
        run, data, evaluation, _stage_name(run.stage),
        covered=f"all {len(run.parts)} body parts" if len(run.parts) > 3 else ", ".join(run.parts),
        trained_labels=describe_version(run.label_version),
        scored_labels=describe_version(evaluation.label_version) if evaluation else "",
        image_input=(f"{spec.get('size')} px, {'padded' if spec.get('pad') else 'stretched'}"
                     f"{', Canny edges' if spec.get('canny') else ''}, {spec.get('normalization')} normalization"))
    history_file = Path(run.artifact_dir) / "history.json"
    if history_file.exists():
        view.learning = learning_curves(json.loads(history_file.read_text()))
    if evaluation is None:
        return view
    if run.stage == BODYPART:
        view.bodypart = _bodypart_view(evaluation)
    else:
        view.fracture = _fracture_view(engine, run, evaluation, problems,
                                       MURA_BASELINE_KAPPA if data.nature == "mura" else None)
    return view


def _bodypart_view(evaluation: EvaluationResult) -> BodypartView:
    overall = evaluation.overall
    assert isinstance(overall, MulticlassMetrics), "the body-part view is stage 1's"
    names, report = overall.class_names, overall.report
    def rows(keys: list[str]) -> list[list[str]]:
        return [[AVERAGE_NAMES.get(k, k), *(cell(v) for v in (report[k]["precision"], report[k]["recall"],
                                                               report[k]["f1"], report[k]["support"]))]
                for k in keys]

    averages = [k for k in report if k.endswith("avg")]
    table = Table(["Body part", "Precision", "Recall", "F1", "Test images"], rows(names), rows(averages),
                  caption="Per body part; the averages over parts are below the line.")
    return BodypartView(overall.accuracy, overall.accuracy_ci or [None, None], overall.n, overall.kappa, table,
                        confusion_picture(overall.confusion, names, "body part, test images"))


def kappa_rows(evaluation: EvaluationResult) -> list[KappaRow]:
    """Per part, then overall: study kappa, its interval, what it rests on (studies, independent leak groups)
    and why it may mean nothing (too few studies, or too few independent groups of them)."""
    rows = []
    for part, metrics in [*sorted(evaluation.per_part.items()), ("overall", evaluation.overall)]:
        assert isinstance(metrics, BinaryMetrics), "kappa rows are stage 2's"
        study = metrics.study
        abnormal = study.abnormal
        interval = study.kappa_ci
        size = effective_size(study.n, study.bootstrap_units)
        caveat = interval_caveat(study.n, abnormal, interval)
        if not caveat and (study.bootstrap_units or study.n) < MIN_STUDIES_FOR_INTERVAL:
            caveat = f"{size}: too few independent cases for the interval to mean anything"
        rows.append(KappaRow(part, study.kappa, interval, study.n, abnormal, caveat, size))
    return rows


def _fracture_view(engine: Engine, run: RunRecord, evaluation: EvaluationResult, problems: list[ReportProblem],
                   baseline: dict[str, float] | None) -> FractureView:
    """Stage 2's results; BASELINE (part -> the MURA paper's kappa) only beside MURA's own data."""
    kappas = {r.part: r for r in kappa_rows(evaluation)}
    columns = ["Body part", "Images", "Image accuracy", "Image AUC", "Studies", "Abnormal studies",
               "Study accuracy (95% CI)", "Study kappa (95% CI)", "Intervals rest on",
               *(["MURA baseline kappa"] if baseline else []), "Study AUC", "Note"]
    parts: list[list[str]] = []
    overall_rows: list[list[str]] = []
    for row in evaluation.part_rows():
        kappa = kappas[row.part]
        cells = [row.part, cell(row.images), cell(row.image_accuracy), cell(row.image_auc), cell(row.studies),
                 cell(kappa.abnormal), with_interval(row.study_accuracy, row.study_accuracy_ci),
                 with_interval(row.kappa, row.kappa_ci), kappa.size,
                 *([cell(baseline.get(row.part))] if baseline else []), cell(row.study_auc),
                 "† too few studies" if kappa.caveat else ""]
        (overall_rows if row.part == "overall" else parts).append(cells)
    table = Table(columns, parts, overall_rows,
                  caption="Image and study level per body part; the overall row is below the line. Study accuracy "
                          "and kappa use the study's mean probability, abnormal above 0.5.")
    overall = evaluation.overall
    assert isinstance(overall, BinaryMetrics), "the fracture view is stage 2's"
    view = FractureView(table, [r for r in kappas.values() if r.caveat],
                        forest_plot(list(kappas.values()), baseline), baseline is not None,
                        confusion_picture(overall.image.confusion, FRACTURE_CLASSES, "test images"),
                        confusion_picture(overall.study.confusion, FRACTURE_CLASSES, "test studies"))
    rows = _predictions(Path(run.artifact_dir), run.id, evaluation.labels, problems)
    if rows:
        sets = study_sets(rows)
        view.curves = Curves(roc_panels(sets), pr_panels(sets), calibration_panels(sets))
        trouble: list[str] = []
        view.gallery = gallery(engine, run, rows, trouble)
        problems += [ReportProblem(run.id, run.status, text) for text in trouble]
    return view


def _predictions(folder: Path, run_id: int, labels: str | None, problems: list[ReportProblem]) -> list[dict]:
    path = predictions_file(folder, "test", labels)
    if not path.is_file():
        problems.append(ReportProblem(run_id, "finished", f"{path} is missing: `bonedb evaluate {run_id}` writes it "
                                                          "again; the curves and the gallery are left out"))
        return []
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))
