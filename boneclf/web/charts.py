"""The pictures of the datasets page: images per body part and label, one panel per dataset."""

from __future__ import annotations

import io

from boneclf.data.stats import DatasetStats


def stats_png(stats: DatasetStats) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    datasets = sorted({c.dataset for c in stats.counts}) or ["(no data)"]
    figure, axes = plt.subplots(1, len(datasets), figsize=(5.5 * len(datasets), 3.2), squeeze=False)
    for axis, dataset in zip(axes[0], datasets):
        rows = [c for c in stats.counts if c.dataset == dataset]
        parts = sorted({c.part for c in rows})
        normal = [sum(c.images for c in rows if c.part == p and c.label == 0) for p in parts]
        abnormal = [sum(c.images for c in rows if c.part == p and c.label == 1) for p in parts]
        axis.barh(parts, normal, color="#4c78a8", label="normal (0)")
        axis.barh(parts, abnormal, left=normal, color="#e45756", label="abnormal (1)")
        axis.set_title(f"{dataset}: images per body part")
        axis.set_xlabel("images")
        axis.invert_yaxis()
        if parts:
            axis.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    plt.close(figure)
    return buffer.getvalue()
