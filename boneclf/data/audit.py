"""`bonedb audit`: does a split leak, and does a dataset on disk still match the database?"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine, func, select

from boneclf.progress import ProgressFactory, silent
from boneclf.results import Result
from boneclf.store.bulk import paused_gc
from boneclf.store.duplicates import group_memberships
from boneclf.store.flags import flagged_in_dataset
from boneclf.store.provenance import LabelChanges, label_changes
from boneclf.store.queries import dataset_id_of, dataset_root, get_split, split_images
from boneclf.store.schema import Dataset, Image, IngestExclusion

from .duplicates import compute_duplicates
from .leakage import exact_duplicates, group_overlaps
from .names import printable
from .verify import inspect_files

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}
_images = Image.__table__


@dataclass
class SplitAudit(Result):
    split: str
    images: int
    overlaps: list[dict] = field(default_factory=list)  # patients and studies in several subsets
    exact_duplicates: list[dict] = field(default_factory=list)
    # Duplicate groups (`bonedb duplicates`: the same picture, verified on the pixels, as stewards decided)
    # whose members lie in several subsets. The one judgement `split create` also uses: a split stored as
    # clean is clean here.
    duplicate_groups: list[dict] = field(default_factory=list)
    within_subset_copies: dict[str, int] = field(default_factory=dict)  # subset -> redundant identical files
    unhashed: list[str] = field(default_factory=list)  # files that could not be read to hash
    grouped_now: bool = False  # the dataset's groups were computed by this audit (images never examined)
    label_changes: LabelChanges | None = None  # since the split was made (not a leak; said in one line)

    computed = ("leaks",)

    @property
    def leaks(self) -> bool:
        return bool(self.overlaps or self.exact_duplicates or self.duplicate_groups)


def audit_split(engine: Engine, name: str, *, progress: ProgressFactory = silent) -> SplitAudit:
    """Patient and study overlap, identical files and duplicate groups across the subsets of split NAME.

    Patients, studies and identical bytes are checked here, independently of anything stored. Whether two
    different files are the same picture is the duplicate groups' judgement, the one `split create` uses:
    when the dataset holds images never examined for copies (ingested without --verify), they are hashed
    and the groups computed first (`duplicates compute`), and stored, so the next audit is quick.
    """
    with paused_gc():
        with engine.connect() as conn:
            split = get_split(conn, name)
            changes = label_changes(conn, split)
            dataset = conn.execute(select(Dataset.name).where(Dataset.id == split.dataset_id)).scalar_one()
            unexamined = conn.execute(select(func.count()).select_from(Image).where(
                Image.dataset_id == split.dataset_id,
                Image.content_hash.is_(None) | Image.near_hash.is_(None) | Image.picture_signature.is_(None))
            ).scalar_one()
        report = SplitAudit(name, 0, label_changes=changes)
        if unexamined:
            computed = compute_duplicates(engine, dataset, progress=progress)
            report.unhashed, report.grouped_now = computed.unreadable, True
        rows = _split_rows(engine, split.id)
        report.images = len(rows)
        report.overlaps = group_overlaps(
            [(r.patient, r.subset, r.path) for r in rows],
            [(r.study_id, r.subset, r.path) for r in rows],
        )
        report.exact_duplicates = exact_duplicates([(r.content_hash, r.subset, r.path) for r in rows])
        report.within_subset_copies = within_subset_copies([(r.content_hash, r.subset) for r in rows])
        with engine.connect() as conn:
            memberships = group_memberships(conn, split.dataset_id, kinds=("near",))
        report.duplicate_groups = crossing_groups(memberships, {r.image_id: (r.subset, r.path) for r in rows})
    return report


def within_subset_copies(rows) -> dict[str, int]:
    """subset -> identical files beyond the first within that subset (rows are (content hash, subset))."""
    seen: set = set()
    copies: dict[str, int] = {}
    for content, subset in rows:
        if content is None:
            continue
        if (content, subset) in seen:
            copies[subset] = copies.get(subset, 0) + 1
        seen.add((content, subset))
    return copies


def crossing_groups(memberships: dict[int, list[int]], where: dict[int, tuple[str, str]]) -> list[dict]:
    """Duplicate groups with members in more than one subset; WHERE is image id -> (subset, path)."""
    found = []
    for group_id, members in sorted(memberships.items()):
        placed = sorted(where[m] for m in members if m in where)
        subsets = sorted({subset for subset, _ in placed})
        if len(subsets) > 1:
            found.append({"kind": "duplicate group", "key": str(group_id), "subsets": subsets,
                          "paths": [f"{subset}: {path}" for subset, path in placed]})
    return found


def _split_rows(engine: Engine, split_id: int) -> list:
    with engine.connect() as conn:
        return split_images(conn, split_id)


@dataclass
class DatasetAudit(Result):
    dataset: str
    root: str
    images: int
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    # Files on disk that an ingest saw and left out on purpose, "path: reason": not a problem.
    left_out: list[str] = field(default_factory=list)
    # Images that may show a patient's identity in their pixels, "path: why": exports leave them out.
    flagged: list[str] = field(default_factory=list)

    computed = ("clean",)

    @property
    def clean(self) -> bool:
        return not (self.missing or self.unexpected or self.changed or self.unreadable)


def audit_dataset(engine: Engine, dataset: str, *, quick: bool = False,
                  progress: ProgressFactory = silent) -> DatasetAudit:
    """Files on disk against the database: missing, unexpected, and changed since ingest.

    quick compares sizes only; otherwise every file with a recorded hash is read and hashed again.
    """
    with engine.connect() as conn:
        dataset_id = dataset_id_of(conn, dataset)
        root = dataset_root(conn, dataset_id)
        rows = conn.execute(
            select(Image.path, Image.file_size, Image.content_hash).where(Image.dataset_id == dataset_id)
        ).all()
        excluded = dict(conn.execute(select(IngestExclusion.path, IngestExclusion.reason)
                                     .where(IngestExclusion.dataset_id == dataset_id)).all())
        flagged = flagged_in_dataset(conn, dataset_id)
        paths = dict(conn.execute(select(Image.id, Image.path).where(Image.id.in_(sorted(flagged)))).all())
    report = DatasetAudit(dataset, str(root), len(rows))
    report.flagged = sorted(f"{paths[image_id]}: {flag.describe()}" for image_id, flag in flagged.items())
    known = {r.path for r in rows}
    # Walk only the top-level folders the dataset's paths live in: the root may hold other data.
    for top in sorted({p.split("/", 1)[0] for p in known if "/" in p}):
        for folder, _dirs, files in os.walk(root / top):
            for name in files:
                relative = (Path(folder) / name).relative_to(root).as_posix()
                if Path(name).suffix.lower() in IMAGE_SUFFIXES and relative not in known:
                    if relative in excluded:
                        # The path once: ingests before FileUnread.beside_path recorded it in the reason too.
                        reason = excluded[relative].replace(f" {relative}:", ":", 1)
                        report.left_out.append(f"{relative}: {reason}")
                    else:
                        report.unexpected.append(printable(relative))  # a name not UTF-8 still prints
    present = []
    for row in rows:
        try:
            size = (root / row.path).stat().st_size
        except FileNotFoundError:
            report.missing.append(row.path)
            continue
        if row.file_size is not None and size != row.file_size:
            report.changed.append(row.path)
        elif row.content_hash is not None and not quick:
            present.append(row)
    if present:
        with progress(len(present), "Re-hashing images") as advance:
            checks = inspect_files(root, [r.path for r in present], advance)
        for row, check in zip(present, checks):
            if check.facts is None:
                report.unreadable.append(f"{row.path}: {check.reason}")  # the path once, relative like the rest
            elif check.facts.content_hash != row.content_hash:
                report.changed.append(row.path)
    report.unexpected.sort()
    report.changed.sort()
    return report
