"""Read-only queries for browsing the dataset: what `bonedb serve` shows, as pages and as /api/ JSON.

Each function answers one page in a few set-based queries (a study-browser page is a count, one
page of studies and their images' ids), so pages stay fast on a full-size MURA. Images are
reached by id only: `image_file` resolves an id to a file inside its dataset's root and refuses
anything else, so no path ever comes from a request.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sqlalchemy import Engine, and_, distinct, func, select

from boneclf.errors import BonedbError, NotFound
from boneclf.results import Result
from boneclf.store.duplicates import list_duplicate_groups
from boneclf.store.flags import flags_of
from boneclf.store.provenance import EVENT_SOURCES, HistoryEvent, HistoryFilter, IngestEntry, list_ingests
from boneclf.store.queries import dataset_id_of, get_split
from boneclf.store.reviews import ReviewRecord, reviews_of
from boneclf.store.schema import (
    Dataset,
    DicomImage,
    DuplicateGroup,
    DuplicateMember,
    Image,
    Patient,
    SplitAssignment,
    SplitVersion,
    Study,
)
from boneclf.vocabulary import BODY_PARTS, UNKNOWN_PART

SUBSETS = ("train", "val", "test")
MAX_PER_PAGE = 200


@dataclass
class DatasetSummary(Result):
    id: int
    name: str
    kind: str
    images: int
    studies: int
    patients: int
    created_at: datetime
    synthetic: bool  # drawn by `bonedb synth` (the demo's is named mura-v1.1, like the real download)


def list_datasets(engine: Engine) -> list[DatasetSummary]:
    """Every dataset with its distinct counts (datasets without images too)."""
    query = (
        select(Dataset.id, Dataset.name, Dataset.kind, func.count(Image.id), func.count(distinct(Study.id)),
               func.count(distinct(Study.patient_id)), Dataset.created_at, Dataset.synthetic)
        .select_from(Dataset)
        .outerjoin(Study, Study.dataset_id == Dataset.id)
        .outerjoin(Image, Image.study_id == Study.id)
        .group_by(Dataset.id, Dataset.name, Dataset.kind, Dataset.created_at, Dataset.synthetic)
        .order_by(Dataset.name)
    )
    with engine.connect() as conn:
        return [DatasetSummary(*row[:-1], bool(row[-1])) for row in conn.execute(query)]


@dataclass
class FilterChoices(Result):
    """What the study browser's menus offer: the names and body parts the database holds."""

    datasets: list[str]
    splits: list[str]
    parts: list[str]


def filter_choices(engine: Engine) -> FilterChoices:
    """Names and parts only, no counting (a one-region folder set offers `unknown`, MURA its seven)."""
    with engine.connect() as conn:
        return FilterChoices(
            list(conn.execute(select(Dataset.name).order_by(Dataset.name)).scalars()),
            list(conn.execute(select(SplitVersion.name).order_by(SplitVersion.name)).scalars()),
            # (dataset, part) pairs: read off the studies' (dataset, part, ...) index, no table scan.
            sorted({part for _, part in conn.execute(select(Study.dataset_id, Study.body_part).distinct())}))


def check_page(page: int, total: int, per_page: int) -> int:
    """The number of pages of TOTAL rows; a page past the last is refused (no LIMIT overflows SQL)."""
    pages = max(1, -(-total // per_page))
    if not 1 <= page <= pages:
        raise BonedbError(f"page {page}: choose a page from 1 to {pages}")
    return pages


@dataclass(frozen=True)
class StudyFilter:
    """What the study browser filters on; None means any."""

    dataset: str | None = None
    part: str | None = None
    source_split: str | None = None
    label: int | None = None
    split: str | None = None  # a split's name; with `subset`, only studies with images in that subset
    subset: str | None = None

    def validate(self) -> None:
        if self.part is not None and self.part not in BODY_PARTS and self.part != UNKNOWN_PART:
            raise BonedbError(f"unknown body part {self.part!r}: choose from {', '.join(BODY_PARTS)} "
                              f"(or {UNKNOWN_PART}, a folder dataset ingested without --part)")
        if self.label is not None and self.label not in (0, 1):
            raise BonedbError("label: 0 (normal) or 1 (abnormal)")
        if self.subset is not None and self.subset not in SUBSETS:
            raise BonedbError(f"subset {self.subset!r}: choose from {', '.join(SUBSETS)}")
        if self.subset is not None and self.split is None:
            raise BonedbError("a subset is a subset of a split: choose the split too")


@dataclass
class StudyRow(Result):
    id: int
    dataset: str
    patient: str
    part: str
    number: int
    source_split: str
    label: int | None  # None: a study no labels file named yet (DICOM)
    image_ids: list[int] = field(default_factory=list)


@dataclass
class StudyPage(Result):
    total: int  # studies that match, on every page
    page: int
    per_page: int
    studies: list[StudyRow]

    computed = ("pages",)

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))


def browse_studies(engine: Engine, where: StudyFilter, page: int = 1, per_page: int = 48) -> StudyPage:
    """One page of the studies that match, in a stable order (dataset, patient, part, number)."""
    where.validate()
    if not 1 <= per_page <= MAX_PER_PAGE:
        raise BonedbError(f"per_page from 1 to {MAX_PER_PAGE}")
    with engine.connect() as conn:
        conditions = []
        if where.dataset is not None:
            conditions.append(Study.dataset_id == dataset_id_of(conn, where.dataset))
        if where.part is not None:
            conditions.append(Study.body_part == where.part)
        if where.source_split is not None:
            conditions.append(Study.source_split == where.source_split)
        if where.label is not None:
            conditions.append(Study.label == where.label)
        if where.split is not None:
            split_id = get_split(conn, where.split).id
            in_split = select(Image.study_id).join(SplitAssignment, SplitAssignment.image_id == Image.id).where(
                SplitAssignment.split_id == split_id)
            if where.subset is not None:
                in_split = in_split.where(SplitAssignment.subset == where.subset)
            conditions.append(Study.id.in_(in_split))
        condition = and_(*conditions) if conditions else None
        count = select(func.count()).select_from(Study)
        total = conn.execute(count.where(condition) if condition is not None else count).scalar_one()
        check_page(page, total, per_page)
        query = (
            select(Study.id, Dataset.name, Patient.patient_key, Study.body_part, Study.study_number,
                   Study.source_split, Study.label)
            .join(Patient, Patient.id == Study.patient_id)
            .join(Dataset, Dataset.id == Study.dataset_id)
            .order_by(Study.dataset_id, Patient.patient_key, Study.body_part, Study.study_number)
            .limit(per_page).offset((page - 1) * per_page)
        )
        if condition is not None:
            query = query.where(condition)
        studies = [StudyRow(*row) for row in conn.execute(query)]
        by_id = {s.id: s for s in studies}
        if by_id:
            for study_id, image_id in conn.execute(
                select(Image.study_id, Image.id).where(Image.study_id.in_(list(by_id))).order_by(Image.image_number)
            ):
                by_id[study_id].image_ids.append(image_id)
    return StudyPage(total, page, per_page, studies)


@dataclass
class ImageRow(Result):
    id: int
    number: int
    width: int | None
    height: int | None
    content_hash: str | None
    subsets: dict[str, str]  # split name -> train, val or test
    flags: list[str] = field(default_factory=list)  # described, e.g. "may show identity in pixels (...)"
    dicom: dict = field(default_factory=dict)  # an image from DICOM: its allow-listed attributes, by keyword


@dataclass
class StudyDetail(Result):
    id: int
    dataset: str
    patient: str
    part: str
    number: int
    source_split: str
    label: int | None
    images: list[ImageRow]
    history: list[HistoryEvent]  # relabels by ingests and review decisions, oldest first
    reviews: list[ReviewRecord]
    ingests: list[IngestEntry]  # the dataset's ingests that changed it
    synthetic: bool = False  # its dataset was drawn by `bonedb synth`: no real radiograph


def study_detail(engine: Engine, study_id: int) -> StudyDetail:
    with engine.connect() as conn:
        row = conn.execute(
            select(Study.id, Dataset.name, Patient.patient_key, Study.body_part, Study.study_number,
                   Study.source_split, Study.label, Dataset.synthetic)
            .join(Patient, Patient.id == Study.patient_id)
            .join(Dataset, Dataset.id == Study.dataset_id)
            .where(Study.id == study_id)
        ).first()
        if row is None:
            raise NotFound(f"no study {study_id}")
        images = [ImageRow(*r, {}) for r in conn.execute(
            select(Image.id, Image.image_number, Image.width, Image.height, Image.content_hash)
            .where(Image.study_id == study_id).order_by(Image.image_number))]
        by_id = {image.id: image for image in images}
        for image_id, split, subset in conn.execute(
            select(SplitAssignment.image_id, SplitVersion.name, SplitAssignment.subset)
            .join(SplitVersion, SplitVersion.id == SplitAssignment.split_id)
            .where(SplitAssignment.image_id.in_(list(by_id) or [-1]))
            .order_by(SplitVersion.name)
        ):
            by_id[image_id].subsets[split] = subset
        for image_id, flags in flags_of(conn, by_id).items():
            by_id[image_id].flags = [flag.describe() for flag in flags]
        for image_id, attributes in conn.execute(select(DicomImage.image_id, DicomImage.attributes)
                                                 .where(DicomImage.image_id.in_(list(by_id) or [-1]))):
            by_id[image_id].dicom = attributes
        events = [e for source in EVENT_SOURCES for e in source(conn, HistoryFilter(study_id=study_id))]
    events.sort(key=lambda e: e.at)
    ingests = [entry for entry in list_ingests(engine, row[1]) if entry.outcome == "applied"]
    study, dataset, patient, part, number, source_split, label, synthetic = row
    return StudyDetail(study, dataset, patient, part, number, source_split, label, images, events,
                       reviews_of(engine, study_id=study_id), ingests, synthetic=bool(synthetic))


def unhashed_images(engine: Engine, split: str) -> int:
    """Images of split SPLIT never examined for copies (ingested without --verify, or before duplicate
    verification): an audit must read and hash them, and compute the groups, first."""
    with engine.connect() as conn:
        return conn.execute(
            select(func.count()).select_from(SplitAssignment)
            .join(SplitVersion, SplitVersion.id == SplitAssignment.split_id)
            .join(Image, Image.id == SplitAssignment.image_id)
            .where(SplitVersion.name == split, Image.content_hash.is_(None) | Image.near_hash.is_(None)
                   | Image.picture_signature.is_(None))
        ).scalar_one()


def studies_of_images(engine: Engine, image_ids) -> dict[int, int]:
    """image id -> its study's id, for the ids that exist (to link pictures to their study pages)."""
    ids = sorted(set(image_ids))
    with engine.connect() as conn:
        return dict(conn.execute(select(Image.id, Image.study_id).where(Image.id.in_(ids or [-1]))).all())


@dataclass
class ImageFile(Result):
    id: int
    path: Path  # absolute, inside the dataset's root
    content_hash: str | None
    study_id: int


def image_file(engine: Engine, image_id: int) -> ImageFile:
    """The file of image IMAGE_ID, resolved inside its dataset's root; NotFound for unknown ids, files
    gone from disk, and stored paths that would lead outside the root (a symlink or `..` in the database)."""
    with engine.connect() as conn:
        row = conn.execute(
            select(Dataset.root, Image.path, Image.content_hash, Image.study_id)
            .join(Dataset, Dataset.id == Image.dataset_id).where(Image.id == image_id)
        ).first()
    if row is None:
        raise NotFound(f"no image {image_id}")
    root = Path(row.root).resolve()
    path = (root / row.path).resolve()
    if not path.is_relative_to(root):
        raise NotFound(f"image {image_id}: its file lies outside its dataset's root")
    if not path.is_file():
        raise NotFound(f"image {image_id}: its file is missing from the dataset's root")
    return ImageFile(image_id, path, row.content_hash, row.study_id)


@dataclass
class GroupRow(Result):
    """A duplicate group as the list shows it: its facts and its members' image ids (the group's page has
    each member's identity)."""

    id: int
    dataset: str
    kind: str
    method: str
    threshold: float
    created_at: datetime
    size: int
    source_splits: list[str]
    image_ids: list[int]

    computed = ("crosses_source_splits",)

    @property
    def crosses_source_splits(self) -> bool:
        return len(self.source_splits) > 1


@dataclass
class GroupPage(Result):
    total: int
    page: int
    per_page: int
    groups: list[GroupRow]

    computed = ("pages",)

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))


def duplicate_groups_page(engine: Engine, dataset: str | None = None, page: int = 1, per_page: int = 50) -> GroupPage:
    """One page of the stored duplicate groups, largest first, with their members' image ids."""
    with engine.connect() as conn:
        count = select(func.count()).select_from(DuplicateGroup)
        if dataset is not None:
            count = count.where(DuplicateGroup.dataset_id == dataset_id_of(conn, dataset))
        total = conn.execute(count).scalar_one()
        check_page(page, total, per_page)
        groups = list_duplicate_groups(conn, dataset, per_page, (page - 1) * per_page)
        members: dict[int, list[int]] = {g.id: [] for g in groups}
        for group_id, image_id in conn.execute(
            select(DuplicateMember.group_id, DuplicateMember.image_id)
            .join(Image, Image.id == DuplicateMember.image_id)
            .where(DuplicateMember.group_id.in_(list(members) or [-1])).order_by(Image.path)
        ):
            members[group_id].append(image_id)
    return GroupPage(total, page, per_page, [
        GroupRow(g.id, g.dataset, g.kind, g.method, g.threshold, g.created_at, g.size, g.source_splits,
                 members[g.id]) for g in groups])


@dataclass
class LeakImage(Result):
    subset: str
    path: str
    image_id: int | None  # None when the file is no longer in the dataset
    study_id: int | None


@dataclass
class LeakRow(Result):
    """One thing a split audit found in several subsets: a patient, a study, identical files, a
    stored duplicate group, with its images."""

    kind: str
    key: str | None  # the patient, study id, content hash or group id
    subsets: list[str]
    images: list[LeakImage]
    group_id: int | None  # a stored duplicate group's id: its page shows the members side by side


@dataclass
class LeakPage(Result):
    total: int
    page: int
    per_page: int
    rows: list[LeakRow]

    computed = ("pages",)

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))


def leak_page(engine: Engine, dataset: str, leaks: list[dict], page: int = 1, per_page: int = 25) -> LeakPage:
    """A page of a split audit's findings (`SplitAudit.overlaps + ...`), each image placed by id so that
    a page can show its thumbnail and link to its study."""
    check_page(page, len(leaks), per_page)
    shown = leaks[(page - 1) * per_page: page * per_page]
    if not shown:
        return LeakPage(0, page, per_page, [])
    placed = [[tuple(entry.split(": ", 1)) for entry in leak["paths"]] for leak in shown]
    paths = sorted({path for images in placed for _, path in images})
    found: dict[str, tuple[int, int]] = {}
    with engine.connect() as conn:
        dataset_id = dataset_id_of(conn, dataset)
        for start in range(0, len(paths), 500):  # bounded IN lists
            found.update((row.path, (row.id, row.study_id)) for row in conn.execute(
                select(Image.path, Image.id, Image.study_id)
                .where(Image.dataset_id == dataset_id, Image.path.in_(paths[start:start + 500]))))
        firsts = {leak_at: found[images[0][1]][0] for leak_at, (leak, images) in enumerate(zip(shown, placed))
                  if leak["kind"] == "exact duplicate" and images and images[0][1] in found}
        exact = _exact_groups(conn, list(firsts.values()))
    rows = []
    for leak_at, (leak, images) in enumerate(zip(shown, placed)):
        group = leak.get("key") if leak["kind"] == "duplicate group" else None
        if leak_at in firsts:
            group = exact.get(firsts[leak_at])  # identical files are a stored exact group too
        rows.append(LeakRow(leak["kind"], leak.get("key"), leak["subsets"],
                            [LeakImage(subset, path, *found.get(path, (None, None))) for subset, path in images],
                            int(group) if group is not None else None))
    return LeakPage(len(leaks), page, per_page, rows)


def _exact_groups(conn, image_ids: list[int]) -> dict[int, int]:
    """image id -> the stored exact-duplicate group it belongs to, for those in one."""
    found: dict[int, int] = {}
    for start in range(0, len(image_ids), 500):
        found.update(conn.execute(
            select(DuplicateMember.image_id, DuplicateMember.group_id)
            .join(DuplicateGroup, DuplicateGroup.id == DuplicateMember.group_id)
            .where(DuplicateGroup.kind == "exact", DuplicateMember.image_id.in_(image_ids[start:start + 500]))
        ).tuples().all())
    return found


def first_images(engine: Engine, study_ids: list[int]) -> dict[int, int]:
    """Each study's first image id (by image number), for a thumbnail beside it in a list."""
    if not study_ids:
        return {}
    with engine.connect() as conn:
        first = (select(Image.study_id, func.min(Image.image_number).label("number"))
                 .where(Image.study_id.in_(study_ids)).group_by(Image.study_id).subquery())
        return dict(conn.execute(select(Image.study_id, func.min(Image.id)).join(
            first, and_(first.c.study_id == Image.study_id, first.c.number == Image.image_number))
            .group_by(Image.study_id)).all())
