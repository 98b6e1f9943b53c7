"""The pictures of the datasets page: images per body part and label, one panel per dataset.

Drawn with matplotlib's object API (no pyplot), so that two requests may draw at once in the server's
threads without sharing pyplot's global figure state.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

from boneclf.data.stats import DatasetStats
from boneclf.vocabulary import LABEL_WORDS

if TYPE_CHECKING:
    from matplotlib.figure import Figure

COLOURS = {0: "#4c78a8", 1: "#e45756"}


def stats_png(stats: DatasetStats) -> bytes:
    buffer = io.BytesIO()
    stats_figure(stats).savefig(buffer, format="png", dpi=90)
    return buffer.getvalue()


def stats_figure(stats: DatasetStats) -> Figure:
    from matplotlib.figure import Figure

    datasets = sorted({c.dataset for c in stats.counts}) or ["(no data)"]
    most = max((len({c.part for c in stats.counts if c.dataset == d}) for d in datasets), default=1)
    figure = Figure(figsize=(5.5 * len(datasets), 1.6 + 0.3 * max(most, 1)), layout="constrained")
    axes = figure.subplots(1, len(datasets), squeeze=False)
    for axis, dataset in zip(axes[0], datasets):
        rows = [c for c in stats.counts if c.dataset == dataset]
        parts = sorted({c.part for c in rows})
        left = [0] * len(parts)
        for label in (0, 1):
            counts = [sum(c.images for c in rows if c.part == p and c.label == label) for p in parts]
            axis.barh(parts, counts, left=left, color=COLOURS[label], label=f"{LABEL_WORDS[label]} ({label})")
            left = [a + b for a, b in zip(left, counts)]
        axis.set_title(f"{dataset}: images per body part", fontsize=10)
        axis.set_xlabel("images")
        axis.invert_yaxis()
        axis.spines[["top", "right"]].set_visible(False)
    if stats.counts:
        # Below the panels, outside every bar: a legend inside an axis covers the bar of a one-region set.
        handles, labels = axes[0][0].get_legend_handles_labels()
        figure.legend(handles, labels, loc="outside lower center", ncols=2, fontsize=8, frameon=False)
    return figure
