"""The report's pictures: matplotlib figures as PNG, base64-encoded for an `<img>` data URL.

Each function takes numbers (a training history, study labels and probabilities, kappa rows) and
returns the picture; none reads the database or writes HTML. A body part has the same colour in
every plot of every report.
"""

from __future__ import annotations

import base64
import io
import math
from typing import Any, NamedTuple

import numpy as np

from boneclf.ml.metrics import (
    average_precision,
    calibration_bins,
    expected_calibration_error,
    precision_recall_curve,
    roc_auc,
    roc_curve,
    study_scores,
)
from boneclf.results import fmt, plural

# Paul Tol's "muted" palette (colour-blind safe), one colour per part for good: never by position.
PART_COLOURS = {
    "elbow": "#332288", "finger": "#88CCEE", "forearm": "#44AA99", "hand": "#117733",
    "humerus": "#999933", "shoulder": "#CC6677", "wrist": "#AA4499", "overall": "#000000",
}
OTHER_COLOUR = "#777777"
TILE_WIDTH = 120  # px of a Grad-CAM tile in the gallery


def part_colour(part: str) -> str:
    return PART_COLOURS.get(part, OTHER_COLOUR)


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def png(figure: Any) -> str:
    """A matplotlib figure as base64 PNG text; the figure is closed."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    _plt().close(figure)
    return base64.b64encode(buffer.getvalue()).decode()


def tile_png(picture: Any) -> str:
    """A Pillow picture as a gallery tile: at most TILE_WIDTH wide (smaller ones stay, the page scales them)."""
    if picture.width > TILE_WIDTH:
        picture = picture.resize((TILE_WIDTH, max(1, round(TILE_WIDTH * picture.height / picture.width))))
    buffer = io.BytesIO()
    picture.save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def _integer_epochs(axis: Any) -> None:
    from matplotlib.ticker import MaxNLocator

    axis.xaxis.set_major_locator(MaxNLocator(integer=True))


def learning_curves(history: dict) -> str:
    return png(learning_figure(history))


def learning_figure(history: dict) -> Any:
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


def confusion_picture(matrix: Any, names: list[str], title: str) -> str:
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
    return png(figure)


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


def _panels(count: int, columns: int = 4) -> tuple[Any, list[Any]]:
    plt = _plt()
    columns = min(columns, count)
    rows = math.ceil(count / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(3.0 * columns, 3.1 * rows), squeeze=False)
    for axis in axes.flat[count:]:
        axis.set_visible(False)
    return figure, list(axes.flat[:count])


def _panel_title(axis: Any, sets: StudySet, text: str) -> None:
    axis.set_title(f"{sets.name}: {text}\n{plural(len(sets.labels), 'study', 'studies')}, "
                   f"{int(sets.labels.sum())} abnormal", fontsize=9)


def _unit_square(axis: Any, x_label: str, y_label: str) -> None:
    axis.set(xlim=(-0.02, 1.02), ylim=(-0.02, 1.02), aspect="equal")
    axis.set_xlabel(x_label, fontsize=8)
    axis.set_ylabel(y_label, fontsize=8)
    axis.tick_params(labelsize=7)


def roc_panels(sets: list[StudySet]) -> str:
    figure, axes = _panels(len(sets))
    overall = sets[0]
    for axis, s in zip(axes, sets):
        axis.plot([0, 1], [0, 1], ":", color="gray", linewidth=1)
        if s is not overall and overall.both_classes:
            axis.plot(*roc_curve(overall.labels, overall.probabilities), color="#bbbbbb", linewidth=1)
        if s.both_classes:
            axis.plot(*roc_curve(s.labels, s.probabilities), color=part_colour(s.name), linewidth=2)
            _panel_title(axis, s, f"AUC {fmt(roc_auc(s.labels, s.probabilities))}")
        else:
            _panel_title(axis, s, "one class only, no curve")
        _unit_square(axis, "false positive rate", "true positive rate")
    figure.tight_layout()
    return png(figure)


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
            _panel_title(axis, s, f"AP {fmt(average_precision(s.labels, s.probabilities))}")
        else:
            _panel_title(axis, s, "no abnormal study, no curve")
        _unit_square(axis, "recall (sensitivity)", "precision")
    figure.tight_layout()
    return png(figure)


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
            _panel_title(axis, s, f"ECE {fmt(expected_calibration_error(s.labels, s.probabilities))}")
        else:
            _panel_title(axis, s, "no studies")
        _unit_square(axis, "mean predicted probability", "observed share abnormal")
    figure.tight_layout()
    return png(figure)


class KappaRow(NamedTuple):
    """One line of the forest plot: a part's (or overall) study kappa and what it rests on."""

    part: str
    kappa: float | None
    interval: list | None
    studies: int
    abnormal: int
    caveat: str  # why the interval may mean nothing; "" when it can be read
    size: str = ""  # the effective test size in words, when it is not just the studies


def forest_plot(rows: list[KappaRow], baseline: dict[str, float] | None = None,
                baseline_name: str = "MURA baseline (DenseNet-169)") -> str:
    """Study kappa per part with its interval; BASELINE (part -> kappa) drawn beside it when given."""
    plt = _plt()
    figure, axis = plt.subplots(figsize=(7.5, 0.45 * len(rows) + 1.3))
    positions = list(range(len(rows)))[::-1]
    low = -0.1
    for y, row in zip(positions, rows):
        colour = part_colour(row.part)
        alpha = 0.4 if row.caveat else 1
        interval = row.interval or []
        if len(interval) == 2 and all(_finite(v) for v in interval):
            axis.plot(interval, [y, y], color=colour, linewidth=2, alpha=alpha)
            low = min(low, float(interval[0]))
        if row.kappa is not None and _finite(row.kappa):
            axis.plot([row.kappa], [y], "o", color=colour, markersize=7, alpha=alpha)
            low = min(low, row.kappa)
        if baseline and row.part in baseline:
            axis.plot([baseline[row.part]], [y], "D", markerfacecolor="white", markeredgecolor="black", markersize=6)
    labels = [f"{r.part}{' †' if r.caveat else ''} ({r.size or plural(r.studies, 'study', 'studies')})" for r in rows]
    axis.set_yticks(positions, labels)
    axis.axvline(0, color="gray", linewidth=1)
    axis.axhline(0.5, color="#cccccc", linewidth=1)  # overall apart from the parts
    axis.set_xlim(max(-1.0, low - 0.05), 1.05)
    axis.set_xlabel("study-level Cohen's kappa (dot) with bootstrap 95% interval (bar)")
    if baseline:
        axis.plot([], [], "D", markerfacecolor="white", markeredgecolor="black", label=baseline_name)
        axis.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    axis.grid(axis="x", alpha=0.3)
    return png(figure)


def _finite(value: Any) -> bool:
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
    return png(figure)
