"""Counts of images, studies and patients per dataset x part x source split x label."""

from __future__ import annotations

from sqlalchemy import Engine, distinct, func, select

from .schema import Dataset, Image, Study


def dataset_stats(
    engine: Engine, dataset: str | None = None, parts=None, splits=None
) -> list[dict]:
    """One row per (dataset, part, split, label) with images, studies and patients counted."""
    query = (
        select(
            Dataset.name.label("dataset"),
            Study.body_part.label("part"),
            Study.source_split.label("split"),
            Study.label.label("label"),
            func.count(Image.id).label("images"),
            func.count(distinct(Study.id)).label("studies"),
            func.count(distinct(Study.patient_id)).label("patients"),
        )
        .select_from(Image)
        .join(Study, Study.id == Image.study_id)
        .join(Dataset, Dataset.id == Study.dataset_id)
        .group_by(Dataset.name, Study.body_part, Study.source_split, Study.label)
        .order_by(Dataset.name, Study.body_part, Study.source_split, Study.label)
    )
    query = _filtered(query, dataset, parts, splits)
    with engine.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(query)]


def dataset_totals(engine: Engine, dataset: str | None = None, parts=None, splits=None) -> list[dict]:
    """Distinct totals per dataset (a patient with several parts counts once)."""
    query = (
        select(
            Dataset.name.label("dataset"),
            func.count(Image.id).label("images"),
            func.count(distinct(Study.id)).label("studies"),
            func.count(distinct(Study.patient_id)).label("patients"),
        )
        .select_from(Image)
        .join(Study, Study.id == Image.study_id)
        .join(Dataset, Dataset.id == Study.dataset_id)
        .group_by(Dataset.name)
        .order_by(Dataset.name)
    )
    query = _filtered(query, dataset, parts, splits)
    with engine.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(query)]


def _filtered(query, dataset, parts, splits):
    if dataset is not None:
        query = query.where(Dataset.name == dataset)
    if parts is not None:
        query = query.where(Study.body_part.in_(list(parts)))
    if splits is not None:
        query = query.where(Study.source_split.in_(list(splits)))
    return query
