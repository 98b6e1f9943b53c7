"""`bonedb report`: one self-contained HTML file about one or more runs, pictures embedded.

Sections: dataset and split, a comparison table with study-level kappa and intervals, then per
run its learning curves, confusion matrix, ROC curve, per-part table and, for stage-2 runs, a
Grad-CAM gallery of true and false positives and negatives from the test subset. Plain HTML and
inline PNGs: it opens offline and needs no JavaScript.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
from pathlib import Path

import numpy as np

from boneclf.data.splits import split_summary
from boneclf.ml.evaluation import (
    EvaluationResult,
    comparison_row,
    evaluate_run,
    latest_result,
    load_run_model,
    predictions_file,
)
from boneclf.ml.metrics import THRESHOLD, roc_curve
from boneclf.results import plain
from boneclf.store.provenance import describe_version
from boneclf.store.runs import RunRecord, get_run

GALLERY_PER_KIND = 3


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


def _img(data: str, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _table(rows: list[dict]) -> str:
    if not rows:
        return "<p>(nothing)</p>"
    columns = list(dict.fromkeys(k for row in rows for k in row))

    def cell(value):
        if isinstance(value, float):
            return f"{value:.3f}"
        return html.escape("" if value is None else str(value))

    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{cell(row.get(c))}</td>" for c in columns) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def learning_curves(history: dict) -> str:
    plt = _plt()
    figure, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for axis, metric in zip(axes, ("loss", "accuracy")):
        for prefix, style in (("", "-"), ("val_", "--")):
            values = history.get(f"head_{prefix}{metric}", []) + history.get(f"{prefix}{metric}", [])
            if values:
                label = f"{'validation' if prefix else 'training'} {metric}"
                axis.plot(range(1, len(values) + 1), values, style, label=label)
        axis.set_xlabel("epoch")
        axis.set_title(metric)
        axis.legend()
    return _png(figure)


def confusion_picture(matrix, names: list[str], title: str) -> str:
    plt = _plt()
    matrix = np.asarray(matrix)
    figure, axis = plt.subplots(figsize=(1.2 + 0.7 * len(names), 1.0 + 0.6 * len(names)))
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


def roc_picture(curves: dict[str, tuple[list[float], list[float], float]]) -> str:
    plt = _plt()
    figure, axis = plt.subplots(figsize=(4, 4))
    for name, (fpr, tpr, auc) in curves.items():
        axis.plot(fpr, tpr, label=f"{name} (AUC {auc:.3f})")
    axis.plot([0, 1], [0, 1], ":", color="gray")
    axis.set_xlabel("false positive rate")
    axis.set_ylabel("true positive rate")
    axis.legend(loc="lower right", fontsize=8)
    return _png(figure)


def _predictions(folder: Path, labels: str | None) -> list[dict]:
    path = predictions_file(folder, "test", labels)
    if not path.exists():
        return []
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def gallery(engine, run_id: int, rows: list[dict]) -> str:
    """Grad-CAM overlays for true positives, false positives, false negatives and true negatives."""
    from PIL import Image

    from boneclf.ml.gradcam import GradCam, overlay

    loaded = load_run_model(engine, run_id)
    explain = GradCam(loaded.model, loaded.run.architecture)
    kinds = {"true positive": (1, 1), "false positive": (0, 1), "false negative": (1, 0), "true negative": (0, 0)}
    parts = []
    for kind, (truth, predicted) in kinds.items():
        picked = [r for r in rows
                  if int(r["label"]) == truth and (float(r["probability"]) > THRESHOLD) == bool(predicted)]
        # The most confident examples of each kind are the most telling.
        picked.sort(key=lambda r: -abs(float(r["probability"]) - THRESHOLD))
        cells = []
        for r in picked[:GALLERY_PER_KIND]:
            full, model_input = loaded.spec.load(Path(r["path"]).read_bytes())
            picture = Image.fromarray(full)
            heatmap, _ = explain(model_input[None])
            buffer = io.BytesIO()
            overlay(picture, heatmap[0]).resize((192, round(192 * picture.height / picture.width))).save(buffer, "PNG")
            data = base64.b64encode(buffer.getvalue()).decode()
            caption = f"{r['part']} p={float(r['probability']):.2f}<br>{html.escape(Path(r['path']).name)}"
            cells.append(f"<figure>{_img(data, kind)}<figcaption>{caption}</figcaption></figure>")
        parts.append(f"<h4>{kind}s ({len(picked)})</h4><div class='gallery'>{''.join(cells) or '<p>none</p>'}</div>")
    return "".join(parts)


def build_report(engine, run_ids: list[int], out: Path) -> Path:
    runs = [get_run(engine, run_id) for run_id in run_ids]
    sections = []
    for split_name in sorted({r.split_name for r in runs}):
        summary = split_summary(engine, split_name)
        sections.append(f"<h2>Dataset and split: {html.escape(split_name)}</h2>"
                        f"<p>dataset {html.escape(summary.dataset)}, content hash "
                        f"<code>{summary.content_hash[:16]}</code>, labels pinned "
                        f"{describe_version(summary.label_version)}, parameters "
                        f"<code>{html.escape(json.dumps(summary.parameters))}</code></p>"
                        + (f"<p><strong>{html.escape(summary.label_changes.describe())}</strong></p>"
                           if summary.label_changes and summary.label_changes.changed else "")
                        + _table([c._asdict() for c in summary.counts]))
    comparison, details = [], []
    for run in runs:
        evaluation = latest_result(engine, run, "test")
        if evaluation is None and run.status == "finished":
            evaluation = evaluate_run(engine, run.id, "test")
        comparison.append(plain(comparison_row(run, evaluation)))
        details.append(_run_section(engine, run, evaluation))
    sections.append("<h2>Comparison</h2><p>Scored on the test subset. Study level: mean of a study's image "
                    "probabilities, abnormal above 0.5; intervals are bootstrap 95% over studies.</p>"
                    + _table(comparison))
    sections += details
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>bonedb report: runs {', '.join(map(str, run_ids))}</title>
<style>
body {{ font-family: sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }}
th, td {{ border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }}
th {{ background: #f2f2f2; }}
.gallery {{ display: flex; flex-wrap: wrap; gap: 0.8em; }}
figure {{ margin: 0; font-size: 0.8em; text-align: center; }}
</style></head><body>
<h1>bonedb report</h1>
<p>Labels are MURA's: abnormal (1) covers fractures, hardware and other findings; normal (0).</p>
{''.join(sections)}
</body></html>
"""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out


def _scored_against(evaluation: EvaluationResult) -> str:
    if evaluation.labels is None:
        return "scored before bonedb recorded which labels an evaluation used"
    which = "the split's pinned labels" if evaluation.labels == "pinned" else "today's labels"
    split_hash = f" of split content hash <code>{evaluation.split_hash[:16]}</code>" if evaluation.split_hash else ""
    return f"scored against {which} ({describe_version(evaluation.label_version)}){split_hash}"


def _run_section(engine, run: RunRecord, evaluation: EvaluationResult | None) -> str:
    folder = Path(run.artifact_dir)
    title = f"<h2>Run {run.id}: {run.stage}, {run.architecture}, {', '.join(run.parts)}</h2>"
    parts = [title, f"<p>status {run.status}, split {html.escape(run.split_name)} (content hash "
             f"<code>{run.split_hash[:16]}</code>), trained on labels {describe_version(run.label_version)}, "
             f"started {run.started_at:%Y-%m-%d %H:%M:%S}, TensorFlow {run.tf_version}</p>"]
    history_file = folder / "history.json"
    if history_file.exists():
        parts.append("<h3>Learning curves</h3>" + _img(learning_curves(json.loads(history_file.read_text())),
                                                        "learning curves"))
    if not evaluation:
        return "".join(parts)
    overall = evaluation.overall
    parts.append(f"<p>evaluation {evaluation.evaluation_id}: {_scored_against(evaluation)}</p>")
    if run.stage == "bodypart":
        parts.append("<h3>Confusion matrix (test)</h3>"
                     + _img(confusion_picture(overall["confusion"], overall["class_names"], "body part"), "confusion"))
        parts.append(_table([{"part": name, **values} for name, values in overall["report"].items()]))
        return "".join(parts)
    parts.append("<h3>Confusion matrices (test)</h3>"
                 + _img(confusion_picture(overall["image"]["confusion"], ["normal", "abnormal"], "images"), "images")
                 + _img(confusion_picture(overall["study"]["confusion"], ["normal", "abnormal"], "studies"), "studies"))
    rows = _predictions(folder, evaluation.labels)
    if rows:
        curves = {}
        for part in sorted({r["part"] for r in rows}) + ["overall"]:
            chosen = [r for r in rows if part == "overall" or r["part"] == part]
            labels = [int(r["label"]) for r in chosen]
            scores = [float(r["probability"]) for r in chosen]
            if len(set(labels)) == 2:
                fpr, tpr = roc_curve(labels, scores)
                auc = overall["image"]["auc"] if part == "overall" else evaluation.per_part[part]["image"]["auc"]
                curves[part] = (fpr, tpr, auc)
        parts.append("<h3>ROC curves (test images)</h3>" + _img(roc_picture(curves), "ROC"))
    parts.append("<h3>Per body part (test)</h3>" + _table([r._asdict() for r in evaluation.part_rows()]))
    if rows:
        parts.append("<h3>Grad-CAM gallery (test)</h3>" + gallery(engine, run.id, rows))
    return "".join(parts)
