"""Typed metric results: what metrics.py computes, what a run (validation) and an evaluation (test)
store in their JSON columns (`to_dict()`), and what is read back from them (`from_dict()`).

Stage 1 (which body part) is scored as one multiclass table, MulticlassMetrics; stage 2 (normal or
abnormal) at image and at study level, BinaryMetrics. Figures that could not be computed are NaN
when fresh and None when read back (JSON has no NaN).
"""

from __future__ import annotations

from dataclasses import Field, dataclass, fields
from typing import Any, ClassVar, TypedDict

from boneclf.results import plain

Interval = list[float]  # [low, high]: a 95% bootstrap interval


class ClassScores(TypedDict):
    """One row of a classification report (a class, or "macro avg" / "weighted avg")."""

    precision: float
    recall: float
    f1: float
    support: int


Report = dict[str, ClassScores]  # class name (then the two averages) -> its scores


class _Scores:
    """to_dict/from_dict for the score dataclasses: OPTIONAL fields are left out of the stored dict while unset.
    Read them by attribute; the stored dicts are only for the database and --json."""

    OPTIONAL: ClassVar[tuple[str, ...]] = ()
    __dataclass_fields__: ClassVar[dict[str, Field[Any]]]  # set by @dataclass on every subclass: fields() reads it

    def to_dict(self) -> dict[str, Any]:
        return {f.name: plain(getattr(self, f.name)) for f in fields(self)
                if not (f.name in self.OPTIONAL and getattr(self, f.name) is None)}


def _report(data: Any) -> Report:
    return {name: ClassScores(precision=row.get("precision"), recall=row.get("recall"), f1=row.get("f1"),
                              support=row.get("support"))
            for name, row in (data or {}).items()}


@dataclass
class ImageScores(_Scores):
    """Stage 2 per image: a file is abnormal above the threshold."""

    n: int
    accuracy: float | None
    auc: float | None
    kappa: float | None
    confusion: list[list[int]]  # rows the truth, columns the prediction
    report: Report

    @classmethod
    def from_dict(cls, data: dict) -> ImageScores:
        return cls(data.get("n", 0), data.get("accuracy"), data.get("auc"), data.get("kappa"),
                   data.get("confusion") or [], _report(data.get("report")))


@dataclass
class StudyScores(_Scores):
    """Stage 2 per study, MURA's protocol: a study's probability is the mean of its images'."""

    OPTIONAL = ("bootstrap_units", "accuracy_ci", "kappa_ci", "auc_ci")

    n: int
    accuracy: float | None
    kappa: float | None
    auc: float | None
    confusion: list[list[int]]
    bootstrap_units: int | None = None  # leak groups the intervals resampled, when studies were united
    accuracy_ci: Interval | None = None  # the intervals, when computed (evaluations; not validation)
    kappa_ci: Interval | None = None
    auc_ci: Interval | None = None

    @property
    def abnormal(self) -> int:
        """Studies whose truth is abnormal."""
        return int(sum(self.confusion[1])) if len(self.confusion) > 1 else 0

    @classmethod
    def from_dict(cls, data: dict) -> StudyScores:
        return cls(data.get("n", 0), data.get("accuracy"), data.get("kappa"), data.get("auc"),
                   data.get("confusion") or [], data.get("bootstrap_units"), data.get("accuracy_ci"),
                   data.get("kappa_ci"), data.get("auc_ci"))


@dataclass
class BinaryMetrics(_Scores):
    """Stage 2 (normal or abnormal): image and study level."""

    OPTIONAL = ("skipped_images",)

    image: ImageScores
    study: StudyScores
    skipped_images: int | None = None  # a run's validation: files of train and val that did not decode

    @classmethod
    def from_dict(cls, data: dict) -> BinaryMetrics:
        return cls(ImageScores.from_dict(data.get("image") or {}), StudyScores.from_dict(data.get("study") or {}),
                   data.get("skipped_images"))


@dataclass
class MulticlassMetrics(_Scores):
    """Stage 1 (which body part): one table over the images."""

    OPTIONAL = ("skipped_images",)

    n: int  # images scored
    accuracy: float | None
    accuracy_ci: Interval | None
    kappa: float | None
    confusion: list[list[int]]
    class_names: list[str]
    report: Report
    skipped_images: int | None = None

    @classmethod
    def from_dict(cls, data: dict) -> MulticlassMetrics:
        return cls(data.get("n", 0), data.get("accuracy"), data.get("accuracy_ci"), data.get("kappa"),
                   data.get("confusion") or [], list(data.get("class_names") or []), _report(data.get("report")),
                   data.get("skipped_images"))


StageMetrics = BinaryMetrics | MulticlassMetrics


def metrics_from_dict(data: dict | None) -> StageMetrics | None:
    """Stored metrics (a run's or an evaluation's) as typed scores; None where nothing was stored."""
    if not data:
        return None
    if "image" in data or "study" in data:
        return BinaryMetrics.from_dict(data)
    return MulticlassMetrics.from_dict(data)
