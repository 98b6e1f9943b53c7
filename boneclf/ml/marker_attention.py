"""Does a run look at burned-in markers? The share of its Grad-CAM heat inside marker boxes ("marker mass").

Classifiers of radiographs learn lead side markers and burned-in text as shortcuts (Zech et al. 2018;
DeGrave et al. 2021). `bonedb evaluate` explains up to `--gradcam-sample` scored images, finds each
picture's markers (`boneclf.data.markers`, on the picture as the file holds it, also for a run trained
with `--mask-markers`: the mass is then measured where the markers were) and reports the mean share of
heat inside their boxes over the true positives and over all explained images, overall and per part.

A run whose mean marker mass over all explained images reaches LOOKS_AT_MARKERS is flagged. Why 0.25: a
heatmap spread evenly would put in the boxes only the share of the picture they cover (`marker_area`,
a few per cent on real sets); in the controlled shortcut experiment (tests/test_marker_shortcut.py) a
model that learned a side marker put well above half of its heat on it, while the same model trained
with `--mask-markers` stayed near the area share. A quarter of all heat on marks covering a few per cent
of the picture is far from an even spread and far from what a model reading bone does.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from boneclf.data.markers import find_markers
from boneclf.errors import BonedbError
from boneclf.results import Result

from .gradcam import GradCam, explained_heatmaps, marker_area_mask, marker_mass
from .pipeline import Examples

LOOKS_AT_MARKERS = 0.25  # mean marker mass over all explained images at which a run is flagged (see above)
DEFAULT_SAMPLE = 200  # images explained at most: Grad-CAM costs a backward pass per image


@dataclass
class MarkerMass(Result):
    """Grad-CAM's heat on burned-in markers, for one run on the images it was scored on."""

    images: int  # explained
    true_positives: int  # of them, abnormal and predicted so
    with_markers: int  # of them, carrying at least one marker box
    marker_mass: dict[str, float | None]  # mean share of heat in marker boxes: "all", "true_positives"
    marker_area: float  # mean share of the picture the boxes cover: the mass of an even heatmap
    per_part: dict[str, dict[str, float | None]] = field(default_factory=dict)  # part -> the same two means
    threshold: float = LOOKS_AT_MARKERS
    layer: str = ""
    method: str = ""

    computed = ("looks_at_markers",)

    @property
    def looks_at_markers(self) -> bool:
        mass = self.marker_mass.get("all")
        return mass is not None and mass >= self.threshold

    @classmethod
    def from_dict(cls, data: dict) -> MarkerMass:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    def warning(self) -> str | None:
        """What a flagged run should do, in one line (None: not flagged)."""
        if not self.looks_at_markers:
            return None
        return (f"looks at markers: {self.marker_mass['all']:.0%} of Grad-CAM's heat falls in burned-in marker boxes "
                f"covering {self.marker_area:.0%} of the pictures (flagged at {self.threshold:.0%}): train again "
                "with --mask-markers so the model cannot use them")


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def sample_indices(count: int, sample: int) -> list[int]:
    """At most SAMPLE of COUNT indices, evenly spread (the same on every evaluation of the same subset)."""
    if count <= sample:
        return list(range(count))
    return sorted({int(i) for i in np.linspace(0, count - 1, sample).round()})


def measure_marker_mass(model, arch: str, spec, examples: Examples, probabilities: np.ndarray,
                        sample: int = DEFAULT_SAMPLE, batch_size: int = 32) -> MarkerMass:
    """Explain up to SAMPLE of the scored EXAMPLES (stage 2: PROBABILITIES of abnormal, one per example) with
    Grad-CAM, explaining the predicted class, and measure the heat inside each picture's marker boxes."""
    explainer = GradCam(model, arch)
    chosen = sample_indices(len(examples), sample)
    pictures, inputs, kept = [], [], []
    for i in chosen:
        try:
            with open(examples.paths[i], "rb") as handle:
                full, model_input = spec.load(handle.read())
        except (OSError, BonedbError):  # evaluation scored it, so this is rare: a file changed since
            continue
        pictures.append(full)
        inputs.append(model_input)
        kept.append(i)
    masses, areas, positives = [], [], []
    by_part: dict[str, list[float]] = defaultdict(list)
    by_part_positive: dict[str, list[float]] = defaultdict(list)
    with_markers = 0
    shapes = [p.shape for p in pictures]
    for k, (i, (_output, heat)) in enumerate(zip(kept, explained_heatmaps(explainer, spec, shapes, inputs,
                                                                          batch_size=batch_size))):
        boxes = find_markers(pictures[k])
        with_markers += bool(boxes)
        mass = marker_mass(heat, shapes[k], boxes)
        areas.append(float(marker_area_mask(heat.shape, shapes[k], boxes).mean()) if boxes else 0.0)
        masses.append(mass)
        part = examples.parts[i]
        by_part[part].append(mass)
        if examples.labels[i] == 1 and float(probabilities[i]) > 0.5:
            positives.append(mass)
            by_part_positive[part].append(mass)
    return MarkerMass(len(kept), len(positives), with_markers,
                      {"all": _mean(masses), "true_positives": _mean(positives)}, _mean(areas) or 0.0,
                      {part: {"all": _mean(by_part[part]), "true_positives": _mean(by_part_positive[part])}
                       for part in sorted(by_part)}, layer=explainer.layer, method=explainer.method)
