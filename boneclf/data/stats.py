"""Counts of images, studies and patients per dataset x part x source split x label."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from sqlalchemy import Engine, distinct, func, select

from boneclf.results import Result
from boneclf.store.schema import Dataset, Image, Study


class PartCount(NamedTuple):
    dataset: str
    part: str
    split: str
    label: int  # MURA's study label: 1 = abnormal, 0 = normal
    images: int
    studies: int
    patients: int


class DatasetTotal(NamedTuple):
    """Distinct totals: a patient with studies of two parts counts once."""

    dataset: str
    images: int
    studies: int
    patients: int


@dataclass
class DatasetStats(Result):
    counts: list[PartCount]
    totals: list[DatasetTotal]


def dataset_stats(engine: Engine, dataset: str | None = None, parts=None, splits=None) -> DatasetStats:
    """Counts per (dataset, part, split, label), and distinct totals per dataset."""
    counts = _counts(engine, (Dataset.name, Study.body_part, Study.source_split, Study.label), dataset, parts, splits)
    totals = _counts(engine, (Dataset.name,), dataset, parts, splits)
    return DatasetStats([PartCount(*row) for row in counts], [DatasetTotal(*row) for row in totals])


def _counts(engine: Engine, keys: tuple, dataset, parts, splits) -> list[tuple]:
    query = (
        select(*keys, func.count(Image.id), func.count(distinct(Study.id)), func.count(distinct(Study.patient_id)))
        .select_from(Image)
        .join(Study, Study.id == Image.study_id)
        .join(Dataset, Dataset.id == Study.dataset_id)
        .group_by(*keys)
        .order_by(*keys)
    )
    if dataset is not None:
        query = query.where(Dataset.name == dataset)
    if parts is not None:
        query = query.where(Study.body_part.in_(list(parts)))
    if splits is not None:
        query = query.where(Study.source_split.in_(list(splits)))
    with engine.connect() as conn:
        return [tuple(row) for row in conn.execute(query)]
