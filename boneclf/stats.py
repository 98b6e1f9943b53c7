"""Counts of images, studies and patients per dataset x part x source split x label."""

from __future__ import annotations

from sqlalchemy import Engine, distinct, func, select

from .schema import Dataset, Image, Study

_GROUPS = {
    "dataset": Dataset.name,
    "part": Study.body_part,
    "split": Study.source_split,
    "label": Study.label,
}


def dataset_stats(engine: Engine, dataset: str | None = None, parts=None, splits=None) -> list[dict]:
    """One row per (dataset, part, split, label) with images, studies and patients counted."""
    return _counts(engine, ("dataset", "part", "split", "label"), dataset, parts, splits)


def dataset_totals(engine: Engine, dataset: str | None = None, parts=None, splits=None) -> list[dict]:
    """Distinct totals per dataset (a patient with several parts counts once)."""
    return _counts(engine, ("dataset",), dataset, parts, splits)


def _counts(engine: Engine, group_by: tuple[str, ...], dataset, parts, splits) -> list[dict]:
    keys = [_GROUPS[name].label(name) for name in group_by]
    query = (
        select(
            *keys,
            func.count(Image.id).label("images"),
            func.count(distinct(Study.id)).label("studies"),
            func.count(distinct(Study.patient_id)).label("patients"),
        )
        .select_from(Image)
        .join(Study, Study.id == Image.study_id)
        .join(Dataset, Dataset.id == Study.dataset_id)
        .group_by(*(_GROUPS[name] for name in group_by))
        .order_by(*(_GROUPS[name] for name in group_by))
    )
    if dataset is not None:
        query = query.where(Dataset.name == dataset)
    if parts is not None:
        query = query.where(Study.body_part.in_(list(parts)))
    if splits is not None:
        query = query.where(Study.source_split.in_(list(splits)))
    with engine.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(query)]
