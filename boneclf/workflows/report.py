"""`bonedb report`: one self-contained HTML file about one or more runs, for a radiologist and an ML engineer.

Sections: how to read it, runs that could not be reported (with their errors), dataset and split,
a comparison table, then per run its provenance, learning curves and, on the test subset: per-part
table (study-level kappa with bootstrap intervals beside the MURA baseline, a note where a part has
too few studies), a forest plot of kappa, study-level ROC, precision-recall and calibration per part
and overall, confusion matrices, and a Grad-CAM gallery stratified by body part and outcome.

Plain HTML, inline PNGs, no JavaScript and no request to anything: it opens offline. A body part
has the same colour in every plot of every report. Tables are pandas DataFrames rendered to HTML.
The file is written whole or not at all; what could not be reported is listed in it and returned,
so that `bonedb report` can exit non-zero.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import html
import io
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from boneclf import __version__
from boneclf.clock import utc_now
from boneclf.data.splits import split_summary
from boneclf.errors import BonedbError
from boneclf.files import atomic_write
from boneclf.ml.evaluation import (
    EvaluationResult,
    comparison_row,
    evaluate_run,
    latest_result,
    load_run_model,
    predictions_file,
)
from boneclf.ml.metrics import (
    THRESHOLD,
    average_precision,
    calibration_bins,
    expected_calibration_error,
    interval_caveat,
    precision_recall_curve,
    roc_auc,
    roc_curve,
    study_scores,
)
from boneclf.results import Result
from boneclf.store.provenance import describe_version
from boneclf.store.queries import image_identities
from boneclf.store.runs import RunRecord, get_run
from boneclf.vocabulary import BODYPART, FRACTURE_CLASSES

# Paul Tol's "muted" palette (colour-blind safe), one colour per part for good: never by position.
PART_COLOURS = {
    "elbow": "#332288", "finger": "#88CCEE", "forearm": "#44AA99", "hand": "#117733",
    "humerus": "#999933", "shoulder": "#CC6677", "wrist": "#AA4499", "overall": "#000000",
}
OTHER_COLOUR = "#777777"
# The MURA paper's baseline (DenseNet-169), study-level kappa on its test set (Rajpurkar et al. 2017, table 2).
MURA_BASELINE_KAPPA = {
    "elbow": 0.710, "finger": 0.389, "forearm": 0.737, "hand": 0.851, "humerus": 0.600, "shoulder": 0.729,
    "wrist": 0.931, "overall": 0.705,
}
OUTCOMES = (("TP", "true positive", 1, 1), ("FP", "false positive", 0, 1),
            ("FN", "false negative", 1, 0), ("TN", "true negative", 0, 0))
AVERAGE_NAMES = {"macro avg": "mean over parts", "weighted avg": "mean weighted by images"}
GALLERY_PER_CELL = 2
TILE_WIDTH = 120


def part_colour(part: str) -> str:
    return PART_COLOURS.get(part, OTHER_COLOUR)


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

    computed = ("complete",)

    @property
    def complete(self) -> bool:
        return not self.problems


# -- Pictures and tables -----------------------------------------------------------------------------
def _plt():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def _png(figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    _plt().close(figure)
    return base64.b64encode(buffer.getvalue()).decode()


def _figure(data: str, alt: str, caption: str, kind: str = "plot") -> str:
    """A picture with its alt text (what it shows) and its caption (how to read it); caption is HTML."""
    return (f'<figure class="{kind}"><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{caption}</figcaption></figure>")


def _number(digits: int = 3):
    def format_(value) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "n/a"
        return f"{value:.{digits}f}" if isinstance(value, float) else str(value)

    return format_


def _table(frame, summary=None, formatters: dict | None = None, caption: str = "") -> str:
    """A DataFrame as an HTML table; `summary` rows (averages, totals) go in a tbody of their own under it."""
    options = dict(index=False, escape=True, border=0, na_rep="n/a", formatters=formatters or {},
                   classes="data")
    text = frame.to_html(**options)
    if summary is not None and len(summary):
        body = re.search(r"<tbody>.*</tbody>", summary.to_html(header=False, **options), re.S).group(0)
        text = text.replace("</table>", body.replace("<tbody>", '<tbody class="summary">', 1) + "\n</table>")
    if caption:
        text = re.sub(r"<table[^>]*>", lambda m: f"{m.group(0)}<caption>{caption}</caption>", text, count=1)
    # Numbers right-aligned, words left: pandas gives every cell the same plain <td>.
    text = re.sub(r"<td>(-?[0-9.]+(?: \(-?[0-9.]+ to -?[0-9.]+\))?|n/a)</td>", r'<td class="num">\1</td>', text)
    return f'<div class="wide">{text}</div>'


def _integer_epochs(axis) -> None:
    from matplotlib.ticker import MaxNLocator

    axis.xaxis.set_major_locator(MaxNLocator(integer=True))


# -- Figures --------------------------------------------------------------------------------------------
def learning_curves(history: dict) -> str:
    return _png(learning_figure(history))


def learning_figure(history: dict):
    """Loss and accuracy per epoch, phase 1 (head only) and phase 2 joined, epochs counted in whole numbers."""
    plt = _plt()
    figure, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    head_epochs = len(history.get("head_loss", []))
    for axis, metric in zip(axes, ("loss", "accuracy")):
        for prefix, style, colour in (("", "-", "#332288"), ("val_", "--", "#CC6677")):
            values = history.get(f"head_{prefix}{metric}", []) + history.get(f"{prefix}{metric}", [])
            if values:
                label = f"{'validation' if prefix else 'training'} {metric}"
                axis.plot(range(1, len(values) + 1), values, style, color=colour, label=label, marker=".")
        if head_epochs and len(history.get("loss", [])):
            axis.axvline(head_epochs + 0.5, color="gray", linestyle=":", label="fine-tuning starts")
        axis.set_xlabel("epoch")
        axis.set_title(metric)
        _integer_epochs(axis)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    return figure


def confusion_picture(matrix, names: list[str], title: str) -> str:
    plt = _plt()
    matrix = np.asarray(matrix)
    side = 1.6 + 0.55 * len(names)
    figure, axis = plt.subplots(figsize=(side, side * 0.9))
    axis.imshow(matrix, cmap="Blues")
    for (i, j), value in np.ndenumerate(matrix):
        axis.text(j, i, str(value), ha="center", va="center",
                  color="white" if value > matrix.max() / 2 else "black")
    axis.set_xticks(range(len(names)), names, rotation=45, ha="right")
    axis.set_yticks(range(len(names)), names)
    axis.set_xlabel("predicted")
    axis.set_ylabel("truth")
    axis.set_title(title)
    return _png(figure)


class StudySet(NamedTuple):
    """One panel's studies: MURA's protocol, a study's probability the mean of its images'."""

    name: str
    labels: np.ndarray
    probabilities: np.ndarray

    @property
    def both_classes(self) -> bool:
        return len(set(self.labels.tolist())) == 2


def study_sets(rows: list[dict]) -> list[StudySet]:
    """Overall first, then each part, from per-image prediction rows (part, study, label, probability)."""
    sets = []
    for part in ["overall", *sorted({r["part"] for r in rows})]:
        chosen = [r for r in rows if part == "overall" or r["part"] == part]
        # The study key alone is unique only within a part.
        keys = [f"{r['part']}/{r['study']}" for r in chosen]
        _, labels, probabilities = study_scores(keys, [int(r["label"]) for r in chosen],
                                                [float(r["probability"]) for r in chosen])
        sets.append(StudySet(part, labels, probabilities))
    return sets


def _panels(count: int, columns: int = 4):
    plt = _plt()
    columns = min(columns, count)
    rows = math.ceil(count / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(3.0 * columns, 3.1 * rows), squeeze=False)
    for axis in axes.flat[count:]:
        axis.set_visible(False)
    return figure, list(axes.flat[:count])


def _panel_title(axis, sets: StudySet, text: str) -> None:
    axis.set_title(f"{sets.name}: {text}\n{_studies(len(sets.labels))}, {int(sets.labels.sum())} abnormal",
                   fontsize=9)


def roc_panels(sets: list[StudySet]) -> str:
    figure, axes = _panels(len(sets))
    overall = sets[0]
    for axis, s in zip(axes, sets):
        axis.plot([0, 1], [0, 1], ":", color="gray", linewidth=1)
        if s is not overall and overall.both_classes:
            axis.plot(*roc_curve(overall.labels, overall.probabilities), color="#bbbbbb", linewidth=1)
        if s.both_classes:
            axis.plot(*roc_curve(s.labels, s.probabilities), color=part_colour(s.name), linewidth=2)
            _panel_title(axis, s, f"AUC {roc_auc(s.labels, s.probabilities):.3f}")
        else:
            _panel_title(axis, s, "one class only, no curve")
        axis.set(xlim=(-0.02, 1.02), ylim=(-0.02, 1.02), aspect="equal")
        axis.set_xlabel("false positive rate", fontsize=8)
        axis.set_ylabel("true positive rate", fontsize=8)
        axis.tick_params(labelsize=7)
    figure.tight_layout()
    return _png(figure)


def pr_panels(sets: list[StudySet]) -> str:
    figure, axes = _panels(len(sets))
    overall = sets[0]
    for axis, s in zip(axes, sets):
        if s is not overall and overall.both_classes:
            axis.plot(*precision_recall_curve(overall.labels, overall.probabilities), color="#bbbbbb", linewidth=1,
                      drawstyle="steps-pre")
        if s.labels.sum() > 0:
            prevalence = float(s.labels.mean())
            axis.axhline(prevalence, linestyle=":", color="gray", linewidth=1)
            recalls, precisions = precision_recall_curve(s.labels, s.probabilities)
            axis.plot(recalls, precisions, color=part_colour(s.name), linewidth=2, drawstyle="steps-pre")
            _panel_title(axis, s, f"AP {average_precision(s.labels, s.probabilities):.3f}")
        else:
            _panel_title(axis, s, "no abnormal study, no curve")
        axis.set(xlim=(-0.02, 1.02), ylim=(-0.02, 1.02), aspect="equal")
        axis.set_xlabel("recall (sensitivity)", fontsize=8)
        axis.set_ylabel("precision", fontsize=8)
        axis.tick_params(labelsize=7)
    figure.tight_layout()
    return _png(figure)


def calibration_panels(sets: list[StudySet]) -> str:
    figure, axes = _panels(len(sets))
    for axis, s in zip(axes, sets):
        axis.plot([0, 1], [0, 1], ":", color="gray", linewidth=1)
        bins = [b for b in calibration_bins(s.labels, s.probabilities) if b.count]
        if bins:
            x = [b.mean_probability for b in bins]
            y = [b.observed_rate for b in bins]
            axis.plot(x, y, "-", color=part_colour(s.name), linewidth=1)
            axis.scatter(x, y, s=[12 + 6 * b.count for b in bins], color=part_colour(s.name), zorder=3)
            for b in bins:
                axis.annotate(str(b.count), (b.mean_probability, b.observed_rate), fontsize=6,
                              xytext=(3, -8), textcoords="offset points")
            _panel_title(axis, s, f"ECE {expected_calibration_error(s.labels, s.probabilities):.3f}")
        else:
            _panel_title(axis, s, "no studies")
        axis.set(xlim=(-0.02, 1.02), ylim=(-0.02, 1.02), aspect="equal")
        axis.set_xlabel("mean predicted probability", fontsize=8)
        axis.set_ylabel("observed share abnormal", fontsize=8)
        axis.tick_params(labelsize=7)
    figure.tight_layout()
    return _png(figure)


class KappaRow(NamedTuple):
    part: str
    kappa: float | None
    interval: list | None
    studies: int
    abnormal: int
    caveat: str


def kappa_rows(evaluation: EvaluationResult) -> list[KappaRow]:
    """Per part, then overall: study kappa, its interval, and why the interval may mean nothing."""
    rows = []
    for part, metrics in [*sorted(evaluation.per_part.items()), ("overall", evaluation.overall)]:
        study = metrics["study"]
        abnormal = int(sum(study["confusion"][1]))
        interval = study.get("kappa_ci")
        rows.append(KappaRow(part, study["kappa"], interval, study["n"], abnormal,
                             interval_caveat(study["n"], abnormal, interval)))
    return rows


def forest_plot(rows: list[KappaRow]) -> str:
    plt = _plt()
    figure, axis = plt.subplots(figsize=(7.5, 0.45 * len(rows) + 1.3))
    positions = list(range(len(rows)))[::-1]
    low = -0.1
    for y, row in zip(positions, rows):
        colour = part_colour(row.part)
        faint = bool(row.caveat)
        if row.interval and all(_finite(v) for v in row.interval):
            axis.plot(row.interval, [y, y], color=colour, linewidth=2, alpha=0.4 if faint else 1)
            low = min(low, row.interval[0])
        if _finite(row.kappa):
            axis.plot([row.kappa], [y], "o", color=colour, markersize=7, alpha=0.4 if faint else 1)
            low = min(low, row.kappa)
        if row.part in MURA_BASELINE_KAPPA:
            axis.plot([MURA_BASELINE_KAPPA[row.part]], [y], "D", markerfacecolor="white", markeredgecolor="black",
                      markersize=6)
    labels = [f"{r.part}{' †' if r.caveat else ''} ({_studies(r.studies)})" for r in rows]
    axis.set_yticks(positions, labels)
    axis.axvline(0, color="gray", linewidth=1)
    axis.axhline(0.5, color="#cccccc", linewidth=1)  # overall apart from the parts
    axis.set_xlim(max(-1.0, low - 0.05), 1.05)
    axis.set_xlabel("study-level Cohen's kappa (dot) with bootstrap 95% interval (bar)")
    axis.plot([], [], "D", markerfacecolor="white", markeredgecolor="black", label="MURA baseline (DenseNet-169)")
    axis.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    axis.grid(axis="x", alpha=0.3)
    return _png(figure)


def _studies(count: int) -> str:
    return f"{count} {'study' if count == 1 else 'studies'}"


def _finite(value) -> bool:
    """A number that can be drawn: stored NaNs come back from JSON columns as None."""
    return isinstance(value, (int, float)) and not math.isnan(value)


def colour_bar() -> str:
    """The heatmaps' colour scale as it looks over a mid-gray X-ray, made by the very `overlay` the tiles use."""
    from PIL import Image

    from boneclf.ml.gradcam import overlay

    plt = _plt()
    ramp = np.tile(np.linspace(0, 1, 256), (12, 1))
    strip = np.asarray(overlay(Image.new("L", (256, 12), 128), ramp))
    figure, axis = plt.subplots(figsize=(4.5, 0.75))
    axis.imshow(strip, extent=(0, 1, 0, 1), aspect="auto")
    axis.set_yticks([])
    axis.set_xticks([0, 0.5, 1], ["0: no heat", "0.5", "1: the image's peak"], fontsize=8)
    axis.set_title("Grad-CAM heat for the class 'abnormal'", fontsize=9)
    return _png(figure)


# -- The report -------------------------------------------------------------------------------------------
def build_report(engine, run_ids: list[int], out: Path) -> ReportResult:
    """Write the report on RUN_IDS to OUT. Runs that cannot be reported in full (no such run, not finished,
    files missing) are shown as far as possible and listed, in the report and in the result."""
    result = ReportResult(str(out))
    runs: list[RunRecord] = []
    for run_id in dict.fromkeys(run_ids):
        try:
            runs.append(get_run(engine, run_id))
        except BonedbError as exc:
            result.problems.append(ReportProblem(run_id, "unknown", str(exc)))
    comparison, sections = [], []
    for run in runs:
        evaluation = None
        if run.status != "finished":
            result.problems.append(ReportProblem(run.id, run.status, _not_finished(run)))
        else:
            try:
                evaluation = latest_result(engine, run, "test") or evaluate_run(engine, run.id, "test")
            except BonedbError as exc:
                result.problems.append(ReportProblem(run.id, run.status, str(exc)))
        comparison.append(comparison_row(run, evaluation))
        problems_before = len(result.problems)
        sections.append(_run_section(engine, run, evaluation, result.problems))
        if evaluation is not None and len(result.problems) == problems_before:
            result.runs.append(run.id)
    page = _page(engine, run_ids, runs, comparison, sections, result.problems)
    atomic_write(Path(out), page)
    return result


def _not_finished(run: RunRecord) -> str:
    if run.status == "running":
        return "still running: report it when it has finished"
    advice = f"resume it with `bonedb train --resume {run.id}`"
    if run.error:
        return f"{run.error} ({advice})"
    return f"{run.status} without an error message ({advice})"


STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; max-width: 1240px; margin: 1.5em auto;
       padding: 0 1em; color: #222; line-height: 1.45; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 2px solid #ddd; padding-bottom: 0.2em; margin-top: 2em; }
h3 { margin-top: 1.6em; }
.meta { color: #555; margin-top: 0; }
nav ul { columns: 2; }
table.data { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
table.data th, table.data td { border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: left; }
table.data th { text-align: center; }
table.data td { white-space: nowrap; } table.data td.num { text-align: right; }
table.data th { background: #f2f2f2; }
table.data tbody.summary td { font-weight: 600; background: #fafafa; }
table.data tbody.summary tr:first-child td { border-top: 2px solid #666; }
.wide { overflow-x: auto; }
.side-by-side { display: flex; flex-wrap: wrap; gap: 0 2em; }
table.data caption { caption-side: top; text-align: left; color: #555; padding-bottom: 0.3em; }
.problems { border-left: 5px solid #c0392b; background: #fdf0ee; padding: 0.4em 1em; }
.note { border-left: 5px solid #d4a017; background: #fdf8e8; padding: 0.4em 1em; }
figure { margin: 1em 0; }
figure img { max-width: 100%; height: auto; }
figcaption { font-size: 0.85em; color: #444; max-width: 60em; }
table.gallery { border-collapse: collapse; }
table.gallery th { background: #f2f2f2; padding: 0.3em; border: 1px solid #ddd; }
table.gallery td { vertical-align: top; border: 1px solid #ddd; padding: 0.3em; }
table.gallery td { min-width: 252px; }
figure.tile { display: inline-block; width: 120px; margin: 0.2em; vertical-align: top; }
figure.tile img { width: 100%; }
figure.tile figcaption { font-size: 0.72em; }
.swatch { display: inline-block; width: 0.9em; height: 0.9em; vertical-align: middle; border-radius: 2px; }
dl.provenance { display: grid; grid-template-columns: max-content auto; gap: 0.1em 1em; font-size: 0.9em; }
dl.provenance dt { font-weight: 600; } dl.provenance dd { margin: 0; }
code { font-size: 0.92em; }
"""


def _page(engine, run_ids, runs, comparison, sections, problems) -> str:
    title = f"bonedb report: run{'s' if len(run_ids) > 1 else ''} {', '.join(map(str, run_ids))}"
    now = utc_now().strftime("%Y-%m-%d %H:%M UTC")
    contents = ['<li><a href="#problems">Runs that could not be reported in full</a></li>'] if problems else []
    contents += [f'<li><a href="#{anchor}">{name}</a></li>' for anchor, name in (
        ("comparison", "Comparison"), ("reading", "How to read this report"), ("data", "Dataset and split"))]
    contents += [f'<li><a href="#run-{r.id}">Run {r.id}: {_stage_name(r.stage)}, {html.escape(r.architecture)}</a></li>'
                 for r in runs]
    body = [f"<h1>{html.escape(title)}</h1>",
            f'<p class="meta">Written {now} by bonedb {__version__}. Self-contained: opens offline, no scripts.</p>',
            f"<nav><ul>{''.join(contents)}</ul></nav>"]
    if problems:
        body.append(_problems_section(problems))
    body += [_comparison_section(comparison), _reading_guide(), _data_section(engine, runs), *sections]
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>\n<body>\n"
            + "\n".join(body) + "\n</body></html>\n")


def _stage_name(stage: str) -> str:
    return "body part (stage 1)" if stage == BODYPART else "normal or abnormal (stage 2)"


def _reading_guide() -> str:
    return """<section id="reading"><h2>How to read this report</h2><ul>
<li><b>Labels</b> are MURA's: a radiologist read each <em>study</em> as normal (0) or abnormal (1). Abnormal is wider
than fractured: fractures, hardware (plates, screws), degenerative joint disease and other findings.</li>
<li><b>Study level</b> is how MURA is scored: a study's probability is the mean of its images' (views'),
abnormal above 0.5. The headline figure is Cohen's kappa between those decisions and the labels
(0 = chance agreement, 1 = perfect).</li>
<li><b>Intervals</b> are bootstrap 95% intervals over studies. Where a part has fewer than 30 studies, or fewer
than 5 of either class, its interval is marked: it says more about the resampling than about the model.</li>
<li><b>MURA baseline</b>: the MURA paper's DenseNet-169 on its own test set (overall kappa 0.705). It is a point of
reference, not a like-for-like comparison: other data, other split.</li>
<li><b>Colours</b>: each body part keeps its colour in every plot of every bonedb report:
""" + ", ".join(f'<span class="swatch" style="background:{c}"></span> {p}' for p, c in PART_COLOURS.items()) + \
        ".</li></ul></section>"


def _problems_section(problems: list[ReportProblem]) -> str:
    import pandas as pd

    frame = pd.DataFrame([{"Run": p.run_id, "Status": p.status, "Error": p.error} for p in problems])
    return ('<section id="problems" class="problems"><h2>Runs that could not be reported in full</h2>'
            "<p>Failed and interrupted runs, runs that do not exist and runs whose files are missing. "
            "What could be shown is below; <code>bonedb report</code> exits with status 1.</p>"
            + _table(frame) + "</section>")


def _data_section(engine, runs: list[RunRecord]) -> str:
    import pandas as pd

    parts = ['<section id="data"><h2>Dataset and split</h2>']
    for split_name in sorted({r.split_name for r in runs}):
        try:
            summary = split_summary(engine, split_name)
        except BonedbError as exc:
            parts.append(f"<p>split {html.escape(split_name)}: {html.escape(str(exc))}</p>")
            continue
        counts = pd.DataFrame([c._asdict() for c in summary.counts])
        parts.append(f"<h3>Split {html.escape(split_name)}</h3><p>Dataset <b>{html.escape(summary.dataset)}</b>, "
                     f"{summary.kind} split created {summary.created_at:%Y-%m-%d %H:%M}, content hash "
                     f"<code>{summary.content_hash[:16]}</code>, labels pinned "
                     f"{describe_version(summary.label_version)}, parameters "
                     f"<code>{html.escape(json.dumps(summary.parameters, sort_keys=True))}</code>.</p>")
        if summary.label_changes and summary.label_changes.changed:
            parts.append(f'<p class="problems">{html.escape(summary.label_changes.describe())}</p>')
        if counts.empty:
            parts.append("<p>(no images)</p>")
            continue
        counts["label"] = counts["label"].map({0: "normal studies", 1: "abnormal studies"})
        table = counts.pivot_table(index="part", columns=["subset", "label"], values="studies", aggfunc="sum",
                                   fill_value=0)
        images = counts.pivot_table(index="part", columns="subset", values="images", aggfunc="sum", fill_value=0)
        subsets = [s for s in ("train", "val", "test") if s in images.columns]
        columns = [(subset, what) for subset in subsets for what in ("normal studies", "abnormal studies", "images")]
        for subset in subsets:
            table[(subset, "images")] = images[subset]
        table = table.reindex(columns=pd.MultiIndex.from_tuples(columns), fill_value=0)
        table.index.name = "Body part"
        table = table.reset_index()
        totals = table.drop(columns=[("Body part", "")]).sum().to_frame().T
        totals.insert(0, ("Body part", ""), "all parts")
        parts.append(_table(table, totals, caption="Studies (by label) and images per body part and subset; "
                                                   "totals below the line. A patient's studies all lie in one "
                                                   "subset."))
    parts.append("</section>")
    return "".join(parts)


def _with_interval(value, interval: str) -> str:
    """A figure with its 95% interval in brackets, for tables."""
    text = _number()(value)
    return f"{text} ({interval})" if interval and text != "n/a" else text


def _comparison_section(rows) -> str:
    import pandas as pd

    records = [{
        "Run": r.run, "Stage": "body part" if r.stage == BODYPART else "normal/abnormal",
        "Architecture": r.architecture, "Body parts": r.parts.replace(",", ", ") if r.parts.count(",") < 3
        else f"all {r.parts.count(',') + 1}", "Image size": r.image_size, "Status": r.status, "Scored on": r.scored_on,
        "Accuracy (95% CI)": _with_interval(r.accuracy, r.accuracy_ci), "Image AUC": r.image_auc,
        "Study kappa (95% CI)": _with_interval(r.study_kappa, r.kappa_ci),
        "Study AUC (95% CI)": _with_interval(r.study_auc, r.auc_ci),
    } for r in rows]
    frame = pd.DataFrame(records)
    numbers = {"Image AUC": _number(), "Image size": _number(0)}
    return ('<section id="comparison"><h2>Comparison</h2><p>Each run scored on its split\'s test subset (or, '
            "without a test evaluation, its validation figures: see <em>Scored on</em>). Accuracy is body-part "
            "accuracy for stage 1 and image accuracy for stage 2; kappa and study AUC follow MURA's study-level "
            "protocol. Brackets: bootstrap 95% interval over studies.</p>" + _table(frame, formatters=numbers)
            + "</section>")


def _provenance(run: RunRecord, evaluation: EvaluationResult | None) -> list[tuple[str, str]]:
    """What a result was made from, as (term, HTML) pairs."""
    spec = run.image_spec
    finished = f"{run.finished_at:%Y-%m-%d %H:%M:%S}" if run.finished_at else "not finished"
    return [
        ("Status", html.escape(run.status)),
        ("Body parts", html.escape(", ".join(run.parts))),
        ("Split", f"{html.escape(run.split_name)}, content hash <code>{html.escape(run.split_hash[:16])}</code> "
                  "at training"),
        ("Labels", f"trained on the split's pinned labels, {describe_version(run.label_version)}"),
        ("Evaluated on", f"test subset, evaluation {evaluation.evaluation_id}: {_scored_against(evaluation)}"
                         if evaluation else "not evaluated"),
        ("Image input", html.escape(f"{spec.get('size')} px, {'padded' if spec.get('pad') else 'stretched'}"
                                    f"{', Canny edges' if spec.get('canny') else ''}, "
                                    f"{spec.get('normalization')} normalization")),
        ("Trained", f"{run.started_at:%Y-%m-%d %H:%M:%S} to {finished} on {html.escape(run.host)}, "
                    f"TensorFlow {html.escape(run.tf_version)}"),
        ("Artifacts", f"<code>{html.escape(run.artifact_dir)}</code>"),
    ]


def _scored_against(evaluation: EvaluationResult) -> str:
    if evaluation.labels is None:
        return "scored before bonedb recorded which labels an evaluation used"
    which = "the split's pinned labels" if evaluation.labels == "pinned" else "today's labels"
    split_hash = f" of split content hash <code>{evaluation.split_hash[:16]}</code>" if evaluation.split_hash else ""
    return f"scored against {which} ({describe_version(evaluation.label_version)}){split_hash}"


def _run_section(engine, run: RunRecord, evaluation: EvaluationResult | None, problems: list) -> str:
    folder = Path(run.artifact_dir)
    covered = f"all {len(run.parts)} body parts" if len(run.parts) > 3 else ", ".join(run.parts)
    parts = [f'<section id="run-{run.id}"><h2>Run {run.id}: {_stage_name(run.stage)}, '
             f"{html.escape(run.architecture)}, {html.escape(covered)}</h2>"]
    if run.error:
        parts.append(f'<p class="problems">Error: {html.escape(run.error)}</p>')
    terms = "".join(f"<dt>{term}</dt><dd>{text}</dd>" for term, text in _provenance(run, evaluation))
    parts.append(f'<dl class="provenance">{terms}</dl>')
    history_file = folder / "history.json"
    if history_file.exists():
        parts.append("<h3>Learning curves</h3>" + _figure(
            learning_curves(json.loads(history_file.read_text())),
            f"Loss and accuracy per epoch of run {run.id}, training and validation",
            "Loss (left) and accuracy (right) per epoch on the training and validation subsets. Validation "
            "loss rising while training loss falls means overfitting; training stopped early keeps the best epoch."))
    if evaluation is None:
        return "".join(parts) + "</section>"
    if run.stage == BODYPART:
        parts.append(_bodypart_results(run, evaluation))
    else:
        parts.append(_fracture_results(engine, run, evaluation, problems))
    return "".join(parts) + "</section>"


def _bodypart_results(run: RunRecord, evaluation: EvaluationResult) -> str:
    import pandas as pd

    overall = evaluation.overall
    names = overall["class_names"]
    report = overall["report"]
    columns = {"precision": "Precision", "recall": "Recall", "f1": "F1", "support": "Test images"}

    def frame(keys):
        return pd.DataFrame([{"Body part": k, **{columns[m]: report[k][m] for m in columns}} for k in keys])

    numbers = {c: _number() for c in ("Precision", "Recall", "F1")}
    accuracy = overall["accuracy"]
    interval = overall.get("accuracy_ci") or [float("nan")] * 2
    return ("<h3>Body part on the test subset</h3>"
            f"<p>Accuracy {_number()(accuracy)} (95% CI {_number()(interval[0])} to {_number()(interval[1])}) on "
            f"{overall['n']} images; Cohen's kappa {_number()(overall['kappa'])}.</p>"
            + _table(frame(names), frame([k for k in report if k.endswith("avg")]).replace(AVERAGE_NAMES), numbers,
                     "Per body part; the averages over parts are below the line.")
            + _figure(confusion_picture(overall["confusion"], names, "body part, test images"),
                      f"Confusion matrix of body parts for run {run.id}",
                      "Rows are the true body part, columns the predicted one; the diagonal is right."))


def _fracture_results(engine, run: RunRecord, evaluation: EvaluationResult, problems: list) -> str:
    import pandas as pd

    kappas = {r.part: r for r in kappa_rows(evaluation)}
    records = [{
        "Body part": row.part, "Images": row.images, "Image accuracy": row.image_accuracy, "Image AUC": row.image_auc,
        "Studies": row.studies, "Abnormal studies": kappas[row.part].abnormal,
        "Study accuracy (95% CI)": _with_interval(row.study_accuracy, row.study_accuracy_ci),
        "Study kappa (95% CI)": _with_interval(row.kappa, row.kappa_ci),
        "MURA baseline kappa": MURA_BASELINE_KAPPA.get(row.part), "Study AUC": row.study_auc,
        "Note": "† too few studies" if kappas[row.part].caveat else "",
    } for row in evaluation.part_rows()]
    frame = pd.DataFrame(records)
    numbers = {c: _number() for c in ("Image accuracy", "Image AUC", "MURA baseline kappa", "Study AUC")}
    is_overall = frame["Body part"] == "overall"
    out = ["<h3>Per body part on the test subset</h3>",
           _table(frame[~is_overall], frame[is_overall], numbers,
                  "Image and study level per body part; the overall row is below the line. Study accuracy and "
                  "kappa use the study's mean probability, abnormal above 0.5.")]
    caveats = [r for r in kappas.values() if r.caveat]
    if caveats:
        out.append('<div class="note"><p><b>Too few studies for the intervals to mean anything</b> (marked † in the '
                   "forest plot):</p><ul>" + "".join(f"<li>{html.escape(r.part)}: {html.escape(r.caveat)}</li>"
                                                   for r in caveats) + "</ul></div>")
    out.append(_figure(forest_plot(list(kappas.values())), f"Forest plot of study-level kappa per body part for run "
                       f"{run.id}, with 95% intervals and the MURA baseline",
                       "Study-level Cohen's kappa per body part (dot) with its bootstrap 95% interval (bar), beside "
                       "the MURA paper's DenseNet-169 baseline (white diamond). Faint: too few studies (†)."))
    rows = _predictions(Path(run.artifact_dir), run.id, evaluation.labels, problems)
    if rows:
        sets = study_sets(rows)
        out.append("<h3>Study level: ROC, precision-recall, calibration</h3>")
        out.append(_figure(roc_panels(sets), f"Study-level ROC curves overall and per body part for run {run.id}",
                           "ROC curves of studies (mean probability of the views), overall and one panel per body "
                           "part, the overall curve in light gray behind each part for reference. Dotted: chance."))
        out.append(_figure(pr_panels(sets), f"Study-level precision-recall curves overall and per body part for run "
                                            f"{run.id}",
                           "Precision-recall curves of studies with average precision (AP). Dotted: the share of "
                           "abnormal studies, what a random ranking scores."))
        out.append(_figure(calibration_panels(sets), f"Reliability diagrams of study probabilities for run {run.id}",
                           "Calibration: studies binned by predicted probability (10 bins); each dot is a bin's mean "
                           "probability against the share of its studies that are abnormal, labelled and sized by "
                           "its count. On the dotted diagonal a probability means what it says; ECE is the mean gap, "
                           "weighted by count."))
    overall = evaluation.overall
    out.append('<h3>Confusion matrices</h3><div class="side-by-side">'
               + _figure(confusion_picture(overall["image"]["confusion"], FRACTURE_CLASSES, "test images"),
                         f"Confusion matrix of test images for run {run.id}",
                         "Images: rows truth, columns prediction (abnormal above 0.5).")
               + _figure(confusion_picture(overall["study"]["confusion"], FRACTURE_CLASSES, "test studies"),
                         f"Confusion matrix of test studies for run {run.id}",
                         "Studies, MURA's protocol: the mean of the views' probabilities, abnormal above 0.5.")
               + "</div>")
    if rows:
        out.append(_gallery_section(engine, run, rows, problems))
    return "".join(out)


def _predictions(folder: Path, run_id: int, labels: str | None, problems: list) -> list[dict]:
    path = predictions_file(folder, "test", labels)
    if not path.is_file():
        problems.append(ReportProblem(run_id, "finished", f"{path} is missing: `bonedb evaluate {run_id}` writes it "
                                                          "again; the curves and the gallery are left out"))
        return []
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def gallery_picks(run_id: int, rows: list[dict],
                  per_cell: int = GALLERY_PER_CELL) -> dict[tuple[str, str], tuple[list[dict], int]]:
    """(part, outcome) -> (up to PER_CELL prediction rows, how many there were to choose from). Chosen by a
    hash of run and image id: the same every time, and typical rather than only the most confident."""
    picks: dict[tuple[str, str], tuple[list[dict], int]] = {}
    for part in sorted({r["part"] for r in rows}):
        for short, _name, truth, predicted in OUTCOMES:
            candidates = [r for r in rows if r["part"] == part and int(r["label"]) == truth
                          and (float(r["probability"]) > THRESHOLD) == bool(predicted)]
            candidates.sort(key=lambda r: hashlib.sha256(f"{run_id}:{r['image_id']}".encode()).hexdigest())
            picks[(part, short)] = (candidates[:per_cell], len(candidates))
    return picks


def _gallery_section(engine, run: RunRecord, rows: list[dict], problems: list) -> str:
    from PIL import Image

    from boneclf.ml.gradcam import GradCam, on_picture, overlay

    picks = gallery_picks(run.id, rows)
    chosen = [r for chosen_rows, _ in picks.values() for r in chosen_rows]
    try:
        loaded = load_run_model(engine, run.id)
    except BonedbError as exc:
        problems.append(ReportProblem(run.id, run.status, f"{exc}; the Grad-CAM gallery is left out"))
        return ""
    with engine.connect() as conn:
        identities = image_identities(conn, [int(r["image_id"]) for r in chosen])
    pictures, inputs, missing = {}, {}, []
    for r in chosen:
        try:
            pictures[r["image_id"]], inputs[r["image_id"]] = loaded.spec.load(Path(r["path"]).read_bytes())
        except (OSError, BonedbError) as exc:
            missing.append(f"{r['path']}: {getattr(exc, 'strerror', None) or exc}")
    if missing:
        problems.append(ReportProblem(run.id, run.status, f"{len(missing)} gallery image(s) unreadable, e.g. "
                                                          f"{missing[0]}"))
    heat = {}
    explain = GradCam(loaded.model, run.architecture)
    if inputs:
        keys = list(inputs)
        maps, _ = explain(np.stack([inputs[k] for k in keys]), class_index=1)
        heat = dict(zip(keys, maps))
    parts = sorted({part for part, _ in picks})
    head = "".join(f"<th scope='col'>{name}s ({short})</th>" for short, name, _, _ in OUTCOMES)
    body = []
    for part in parts:
        cells = []
        for short, name, _truth, _predicted in OUTCOMES:
            chosen_rows, total = picks[(part, short)]
            tiles = []
            for r in chosen_rows:
                key = r["image_id"]
                if key not in heat:
                    continue
                picture = pictures[key]
                tile = overlay(Image.fromarray(picture), on_picture(heat[key], loaded.spec, picture.shape))
                if tile.width > TILE_WIDTH:  # smaller ones stay as they are: the page scales them up
                    tile = tile.resize((TILE_WIDTH, max(1, round(TILE_WIDTH * tile.height / tile.width))))
                buffer = io.BytesIO()
                tile.save(buffer, "PNG")
                identity = identities.get(int(key))
                where = identity.describe() if identity else Path(r["path"]).name
                probability = float(r["probability"])
                truth_word = "abnormal" if int(r["label"]) else "normal"
                tiles.append(_figure(
                    base64.b64encode(buffer.getvalue()).decode(),
                    f"Grad-CAM heatmap for 'abnormal' over the X-ray {where}, a {name}",
                    f"{html.escape(where)}<br>p(abnormal) {probability:.2f}, truth {truth_word}", kind="tile"))
            shown = f"<br><small>{len(tiles)} of {total}</small>" if total > len(tiles) else ""
            cells.append(f"<td>{''.join(tiles) or '<small>none</small>'}{shown}</td>")
        swatch = f"<span class='swatch' style='background:{part_colour(part)}'></span>"
        body.append(f"<tr><th scope='row'>{swatch} {html.escape(part)}</th>{''.join(cells)}</tr>")
    intro = (f"<p>Test images of each body part and outcome, up to {GALLERY_PER_CELL} per cell, picked by a hash of "
             "run and image id: the same images every time, typical rather than the most confident. Every heatmap "
             "explains the class <b>abnormal</b> (its logit), whatever the prediction: on a false negative it shows "
             "the evidence for abnormal the model saw and outweighed. Heat is scaled to each image's own peak, so a "
             "faint map and a strong one look alike; it is not a probability. "
             f"Method: gradient x activation at layer <code>{html.escape(explain.layer)}</code>"
             "; on padded inputs the padding is cut away.</p>")
    bar = _figure(colour_bar(), "Colour scale of the heatmaps, from no heat to the image's peak",
                  "Colour scale: heat for 'abnormal' relative to the image's peak, as it shows over a mid-gray "
                  "pixel; cold regions keep the plain X-ray.", kind="colourbar")
    return ("<h3>Grad-CAM gallery</h3>" + intro + bar
            + f"<table class='gallery'><thead><tr><th></th>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")
