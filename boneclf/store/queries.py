"""Queries that several layers share: a dataset by name, its root, a split by name, a split's images."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import NamedTuple

from sqlalchemy import Connection, select

from boneclf.errors import NotFound
from boneclf.files import safe_name

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


class DatasetFacts(NamedTuple):
    """What a dataset is, as reports must describe it."""

    name: str
    kind: str  # mura, folder or dicom: the reader that made it
    synthetic: bool  # drawn by `bonedb synth`, not radiographs of people

    @property
    def nature(self) -> str:
        """"synthetic", "mura" (MURA's own radiographs and labels), "folder" (a class-folder set) or "dicom"
        (a PACS export)."""
        return "synthetic" if self.synthetic else self.kind


def synthetic_note(dataset: str | None, data: str | None) -> str | None:
    """Said beside every figure that comes from synthetic pictures (None: real data); DATA is a DatasetFacts
    nature, as runs and evaluations carry it."""
    if data != "synthetic":
        return None
    return f"dataset {dataset} is synthetic (drawn by `bonedb synth`): these figures describe no real radiographs"


def dataset_facts(conn: Connection, dataset_id: int) -> DatasetFacts:
    name, kind, synthetic = conn.execute(
        select(Dataset.name, Dataset.kind, Dataset.synthetic).where(Dataset.id == dataset_id)).one()
    return DatasetFacts(name, kind, bool(synthetic))


def split_dataset(conn: Connection, split_id: int) -> DatasetFacts:
    """What the dataset of split SPLIT_ID is."""
    dataset_id = conn.execute(select(SplitVersion.dataset_id).where(SplitVersion.id == split_id)).scalar_one()
    return dataset_facts(conn, dataset_id)


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
    return [SplitImage._make(row) for row in rows]


class ImageIdentity(NamedTuple):
    """Where an image comes from, in the words people use: dataset, part, patient, study, image for MURA;
    dataset and the file's own path for a folder set, whose patients and studies bonedb made up."""

    dataset: str
    part: str
    patient: str
    study: int
    image: int
    path: str = ""  # relative to the dataset's root
    kind: str = "mura"  # the dataset's reader: mura or folder

    @property
    def name(self) -> str:
        """A file-name stem, e.g. `mura-v1.1_humerus_patient11186_study1_image2`, or for a folder set its file's
        path without the extension, e.g. `kaggle_train_fractured_IMG_0001` (from train/fractured/IMG 0001.jpg)."""
        if self.kind == "folder":
            return safe_name(f"{self.dataset}_{source_stem(self.path)}")
        return safe_name(f"{self.dataset}_{self.part}_patient{self.patient}_study{self.study}_image{self.image}")

    def describe(self) -> str:
        """For people, e.g. `mura-v1.1: humerus, patient 11186, study 1, image 2`, or `kaggle: train/fractured/
        IMG 0001.jpg` for a folder set."""
        if self.kind == "folder":
            return f"{self.dataset}: {self.path}"
        return f"{self.dataset}: {self.part}, patient {self.patient}, study {self.study}, image {self.image}"


def source_stem(path: str) -> str:
    """A dataset path as one file-name stem: folders joined by underscores, the extension left out, so that the
    name says where the file came from (`train/fractured/IMG 0001.jpg` -> `train_fractured_IMG_0001`)."""
    return safe_name(str(PurePosixPath(path).with_suffix("")).replace("/", "_"))


def image_identities(conn: Connection, image_ids) -> dict[int, ImageIdentity]:
    """image id -> its identity, for the ids that exist."""
    ids = sorted(set(image_ids))
    found: dict[int, ImageIdentity] = {}
    for start in range(0, len(ids), 500):  # bounded IN lists
        rows = conn.execute(
            select(Image.id, Dataset.name, Study.body_part, Patient.patient_key, Study.study_number, Image.image_number,
                   Image.path, Dataset.kind)
            .join(Study, Study.id == Image.study_id)
            .join(Patient, Patient.id == Study.patient_id)
            .join(Dataset, Dataset.id == Image.dataset_id)
            .where(Image.id.in_(ids[start:start + 500]))
        )
        found.update({row[0]: ImageIdentity(*row[1:]) for row in rows})
    return found
