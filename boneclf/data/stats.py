"""Counts of images, studies and patients per dataset x part x source split x label."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import NamedTuple

from sqlalchemy import Engine, distinct, func, select

from boneclf.results import Result
from boneclf.store.schema import Dataset, DuplicateMember, Image, Study


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


class DuplicateCount(NamedTuple):
    """Copies inside one source split: identical files beyond the first, and images of near groups."""

    dataset: str
    split: str
    images: int
    identical_copies: int  # files whose bytes another file of the same split already has
    in_duplicate_groups: int  # images in a stored duplicate group (exact or near) with another of this split


@dataclass
class DatasetStats(Result):
    counts: list[PartCount]
    totals: list[DatasetTotal]
    duplicates: list[DuplicateCount] = field(default_factory=list)  # per source split, where any
    synthetic: list[str] = field(default_factory=list)  # datasets shown that `bonedb synth` drew


def dataset_stats(engine: Engine, dataset: str | None = None, parts=None, splits=None) -> DatasetStats:
    """Counts per (dataset, part, split, label), distinct totals per dataset, and copies per source split."""
    counts = _counts(engine, (Dataset.name, Study.body_part, Study.source_split, Study.label), dataset, parts, splits)
    totals = _counts(engine, (Dataset.name,), dataset, parts, splits)
    with engine.connect() as conn:
        drawn = set(conn.execute(select(Dataset.name).where(Dataset.synthetic.is_(True))).scalars())
    return DatasetStats([PartCount(*row) for row in counts], [DatasetTotal(*row) for row in totals],
                        _duplicates(engine, dataset, parts, splits),
                        sorted({row[0] for row in totals} & drawn))


def _duplicates(engine: Engine, dataset, parts, splits) -> list[DuplicateCount]:
    query = (select(Dataset.name, Study.source_split, Image.id, Image.content_hash)
             .select_from(Image).join(Study, Study.id == Image.study_id).join(Dataset, Dataset.id == Study.dataset_id))
    query = _filtered(query, dataset, parts, splits)
    with engine.connect() as conn:
        rows = conn.execute(query).all()
        members = conn.execute(select(DuplicateMember.group_id, DuplicateMember.image_id)).all()
    where = {image_id: (name, split) for name, split, image_id, _ in rows}
    images: Counter = Counter((name, split) for name, split, _, _ in rows)
    seen: set = set()
    identical: Counter = Counter()
    for name, split, _, content in rows:
        if content is not None:
            identical[(name, split)] += (name, split, content) in seen
            seen.add((name, split, content))
    per_group: dict[tuple, list[int]] = defaultdict(list)
    for group_id, image_id in members:
        if image_id in where:
            per_group[(group_id, *where[image_id])].append(image_id)
    grouped: dict[tuple, set] = defaultdict(set)
    for (_, name, split), ids in per_group.items():
        if len(ids) > 1:
            grouped[(name, split)].update(ids)
    return [DuplicateCount(name, split, images[(name, split)], identical[(name, split)], len(grouped[(name, split)]))
            for name, split in sorted(images) if identical[(name, split)] or grouped[(name, split)]]


def _filtered(query, dataset, parts, splits):
    """QUERY (images joined to studies and datasets) narrowed to the `stats` options given."""
    if dataset is not None:
        query = query.where(Dataset.name == dataset)
    if parts is not None:
        query = query.where(Study.body_part.in_(list(parts)))
    if splits is not None:
        query = query.where(Study.source_split.in_(list(splits)))
    return query


def _counts(engine: Engine, keys: tuple, dataset, parts, splits) -> list[tuple]:
    query = (
        select(*keys, func.count(Image.id), func.count(distinct(Study.id)), func.count(distinct(Study.patient_id)))
        .select_from(Image)
        .join(Study, Study.id == Image.study_id)
        .join(Dataset, Dataset.id == Study.dataset_id)
        .group_by(*keys)
        .order_by(*keys)
    )
    query = _filtered(query, dataset, parts, splits)
    with engine.connect() as conn:
        return [tuple(row) for row in conn.execute(query)]
