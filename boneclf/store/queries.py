"""Queries that several layers share: a dataset by name, its root, a split by name, a split's images."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import NamedTuple

from sqlalchemy import Connection, select

from boneclf.errors import NotFound

from .schema import Dataset, Image, Patient, SplitAssignment, SplitVersion, Study


class SplitImage(NamedTuple):
    """One image of a split with what training, export and audit need to know about it."""

    image_id: int
    path: str  # relative to the dataset root
    subset: str
    part: str
    label: int  # pinned: the label when the split was made
    patient: str
    study_id: int
    study_number: int
    image_number: int
    content_hash: str | None
    perceptual_hash: str | None
    current_label: int  # the study's label today

    @property
    def study_key(self) -> str:
        """A study's identity as text: patient, part and number (the number alone is not unique)."""
        return f"{self.patient}/{self.part}/{self.study_number}"


def dataset_id_of(conn: Connection, dataset: str) -> int:
    found = conn.execute(select(Dataset.id).where(Dataset.name == dataset)).scalar_one_or_none()
    if found is None:
        names = conn.execute(select(Dataset.name).order_by(Dataset.name)).scalars().all()
        known = ", ".join(names) if names else "none yet: run `bonedb ingest` first"
        raise NotFound(f"no dataset named {dataset!r} (datasets: {known})")
    return found


def dataset_root(conn: Connection, dataset_id: int) -> Path:
    return Path(conn.execute(select(Dataset.root).where(Dataset.id == dataset_id)).scalar_one())


@dataclass(frozen=True)
class SplitRecord:
    """One row of split_versions, typed: a split as it was made."""

    id: int
    name: str
    dataset_id: int
    kind: str  # bonedb (made by split create) or source (the dataset's own)
    parameters: dict
    seed: int | None
    content_hash: str
    images: int  # assigned when it was made
    label_version: int | None  # of the labels it pinned
    leaks: dict | None  # leak audit when stored: count of crossings by kind
    created_at: datetime


def get_split(conn: Connection, name: str) -> SplitRecord:
    """The split NAME, as made."""
    table = SplitVersion.__table__
    found = conn.execute(select(table).where(table.c.name == name)).first()
    if found is None:
        names = conn.execute(select(SplitVersion.name).order_by(SplitVersion.name)).scalars().all()
        known = ", ".join(names) if names else "none yet: run `bonedb split create NAME`"
        raise NotFound(f"no split named {name!r} (splits: {known})")
    return SplitRecord(**found._mapping)


def split_images(conn: Connection, split_id: int) -> list[SplitImage]:
    """Every image of a split with its pinned and today's label, sorted by path (the order is part of
    what makes runs reproducible)."""
    rows = conn.execute(
        select(Image.id, Image.path, SplitAssignment.subset, Study.body_part, SplitAssignment.label,
               Patient.patient_key, Study.id, Study.study_number, Image.image_number, Image.content_hash,
               Image.perceptual_hash, Study.label)
        .join(Image, Image.id == SplitAssignment.image_id)
        .join(Study, Study.id == Image.study_id)
        .join(Patient, Patient.id == Study.patient_id)
        .where(SplitAssignment.split_id == split_id)
        .order_by(Image.path)
    )
    return [SplitImage(*row) for row in rows]


class ImageIdentity(NamedTuple):
    """Where an image comes from, in the words people use: dataset, part, patient, study, image."""

    dataset: str
    part: str
    patient: str
    study: int
    image: int

    @property
    def name(self) -> str:
        """A file-name stem, e.g. `mura-v1.1_humerus_patient11186_study1_image2`."""
        return re.sub(r"[^A-Za-z0-9._-]", "_",
                      f"{self.dataset}_{self.part}_patient{self.patient}_study{self.study}_image{self.image}")

    def describe(self) -> str:
        """For people, e.g. `mura-v1.1: humerus, patient 11186, study 1, image 2`."""
        return f"{self.dataset}: {self.part}, patient {self.patient}, study {self.study}, image {self.image}"


def image_identities(conn: Connection, image_ids) -> dict[int, ImageIdentity]:
    """image id -> its identity, for the ids that exist."""
    ids = sorted(set(image_ids))
    found: dict[int, ImageIdentity] = {}
    for start in range(0, len(ids), 500):  # bounded IN lists
        rows = conn.execute(
            select(Image.id, Dataset.name, Study.body_part, Patient.patient_key, Study.study_number, Image.image_number)
            .join(Study, Study.id == Image.study_id)
            .join(Patient, Patient.id == Study.patient_id)
            .join(Dataset, Dataset.id == Image.dataset_id)
            .where(Image.id.in_(ids[start:start + 500]))
        )
        found.update({row[0]: ImageIdentity(*row[1:]) for row in rows})
    return found
