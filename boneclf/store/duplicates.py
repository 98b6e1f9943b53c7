"""Duplicate groups as stored: images of one dataset that are the same picture.

Groups are made by `boneclf.data.duplicates` (exact: same bytes; near: the same picture, verified on the
pixels) and replaced wholesale per dataset each time they are computed; this module
only writes and reads them. Readers get typed results: `list_duplicate_groups` for a page of
groups, `get_duplicate_group` for one group with every member's identity and source split.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Connection, delete, func, insert, select

from boneclf.errors import NotFound
from boneclf.results import Result

from .bulk import insert_rows
from .keys import inserted_id
from .picture_pairs import pair_evidence
from .queries import dataset_id_of
from .schema import Dataset, DuplicateGroup, DuplicateMember, Image, Patient, Study

_groups = DuplicateGroup.__table__
_members = DuplicateMember.__table__


@dataclass
class DuplicateMemberInfo(Result):
    image_id: int
    path: str
    patient: str
    study: int  # the study number (per patient and part)
    part: str
    label: int
    source_split: str
    score: float | None  # best verified correlation with another member (same_picture); None in exact groups or
    # when only a steward joined it


@dataclass
class DuplicateGroupInfo(Result):
    id: int
    dataset: str
    kind: str  # exact or near
    method: str
    threshold: float
    created_at: datetime
    size: int
    source_splits: list[str]  # the distinct source splits its members come from
    members: list[DuplicateMemberInfo] = field(default_factory=list)  # filled by get_duplicate_group
    # The verified pairs that join the group, with their evidence (filled by get_duplicate_group).
    pairs: list[PairEvidence] = field(default_factory=list)

    computed = ("crosses_source_splits",)

    @property
    def crosses_source_splits(self) -> bool:
        """True when the dataset's own split puts copies of this picture in more than one subset."""
        return len(self.source_splits) > 1


@dataclass
class PairEvidence(Result):
    """Why two members are the same picture: the transform that maps the second onto the first, and how
    well the aligned pictures agree (same_picture.Verdict, as stored)."""

    first: int  # image ids (one file of each content)
    second: int
    same: bool
    score: float
    inliers: int
    overlap: float
    angle: float
    scale: float
    flipped: bool
    dx: float
    dy: float
    method: str


@dataclass
class GroupPlan:
    """A group to store: its kind and members as (image id, score or None)."""

    kind: str
    members: list[tuple[int, float | None]]


def replace_groups(conn: Connection, dataset_id: int, plans: list[GroupPlan], *, method: dict[str, str],
                   threshold: dict[str, float]) -> int:
    """Delete the dataset's groups and store `plans` instead (method and threshold per kind); returns
    how many groups there are. Runs in the caller's transaction: all or nothing. When the stored groups
    are already these, nothing is written (a repeated ingest or compute changes nothing)."""
    if _stored_plans(conn, dataset_id) == _comparable(plans, method, threshold):
        return len(plans)
    conn.execute(delete(_groups).where(_groups.c.dataset_id == dataset_id))
    stored = 0
    members: list[tuple] = []
    for plan in plans:
        group_id = inserted_id(conn.execute(insert(_groups).values(
            dataset_id=dataset_id, kind=plan.kind, method=method[plan.kind], threshold=threshold[plan.kind],
        )))
        members.extend((group_id, image_id, score) for image_id, score in plan.members)
        stored += 1
    insert_rows(conn, _members, ("group_id", "image_id", "score"), members)
    return stored


def _comparable(plans: list[GroupPlan], method: dict[str, str], threshold: dict[str, float]) -> set:
    return {(p.kind, method[p.kind], float(threshold[p.kind]),
             frozenset((image_id, None if d is None else round(float(d), 6)) for image_id, d in p.members))
            for p in plans}


def _stored_plans(conn: Connection, dataset_id: int) -> set:
    rows = conn.execute(
        select(_groups.c.id, _groups.c.kind, _groups.c.method, _groups.c.threshold, _members.c.image_id,
               _members.c.score)
        .join(_members, _members.c.group_id == _groups.c.id)
        .where(_groups.c.dataset_id == dataset_id)
    ).all()
    groups: dict[int, tuple] = {}
    members: dict[int, set] = defaultdict(set)
    for row in rows:
        groups[row.id] = (row.kind, row.method, float(row.threshold))
        members[row.id].add((row.image_id, None if row.score is None else round(float(row.score), 6)))
    return {(*groups[g], frozenset(members[g])) for g in groups}


def group_memberships(conn: Connection, dataset_id: int, kinds: tuple[str, ...] = ("exact", "near")
                      ) -> dict[int, list[int]]:
    """group id -> image ids, for the dataset's groups of the given kinds (what splits unite)."""
    rows = conn.execute(
        select(_members.c.group_id, _members.c.image_id)
        .join(_groups, _groups.c.id == _members.c.group_id)
        .where(_groups.c.dataset_id == dataset_id, _groups.c.kind.in_(kinds))
    )
    found: dict[int, list[int]] = defaultdict(list)
    for group_id, image_id in rows:
        found[group_id].append(image_id)
    return dict(found)


def _member_rows(conn: Connection, group_ids: list[int]):
    return conn.execute(
        select(_members.c.group_id, Image.id, Image.path, Patient.patient_key, Study.study_number,
               Study.body_part, Study.label, Study.source_split, _members.c.score)
        .join(Image, Image.id == _members.c.image_id)
        .join(Study, Study.id == Image.study_id)
        .join(Patient, Patient.id == Study.patient_id)
        .where(_members.c.group_id.in_(group_ids))
        .order_by(_members.c.group_id, Image.path)
    ).all()


def list_duplicate_groups(conn: Connection, dataset: str | None = None, limit: int = 50, offset: int = 0,
                          ) -> list[DuplicateGroupInfo]:
    """A page of groups, largest first (then by id), each with its size and source splits but no members."""
    size = func.count(_members.c.image_id).label("size")
    query = (
        select(_groups.c.id, Dataset.name, _groups.c.kind, _groups.c.method, _groups.c.threshold,
               _groups.c.created_at, size)
        .join(Dataset, Dataset.id == _groups.c.dataset_id)
        .join(_members, _members.c.group_id == _groups.c.id)
        .group_by(_groups.c.id, Dataset.name, _groups.c.kind, _groups.c.method, _groups.c.threshold,
                  _groups.c.created_at)
        .order_by(size.desc(), _groups.c.id)
        .limit(limit).offset(offset)
    )
    if dataset is not None:
        query = query.where(_groups.c.dataset_id == dataset_id_of(conn, dataset))
    rows = conn.execute(query).all()
    splits: dict[int, set[str]] = defaultdict(set)
    if rows:
        for row in conn.execute(
            select(_members.c.group_id, Study.source_split).distinct()
            .join(Image, Image.id == _members.c.image_id).join(Study, Study.id == Image.study_id)
            .where(_members.c.group_id.in_([r.id for r in rows]))
        ):
            splits[row[0]].add(row[1])
    return [DuplicateGroupInfo(r.id, r.name, r.kind, r.method, r.threshold, r.created_at, r.size,
                               sorted(splits[r.id])) for r in rows]


def get_duplicate_group(conn: Connection, group_id: int) -> DuplicateGroupInfo:
    """One group with every member: path, patient, study, part, label and source split."""
    row = conn.execute(
        select(_groups.c.id, Dataset.name, _groups.c.kind, _groups.c.method, _groups.c.threshold,
               _groups.c.created_at)
        .join(Dataset, Dataset.id == _groups.c.dataset_id)
        .where(_groups.c.id == group_id)
    ).first()
    if row is None:
        raise NotFound(f"no duplicate group {group_id} (`bonedb duplicates list` shows the groups)")
    members = [DuplicateMemberInfo(*m[1:]) for m in _member_rows(conn, [group_id])]
    return DuplicateGroupInfo(row.id, row.name, row.kind, row.method, row.threshold, row.created_at,
                              len(members), sorted({m.source_split for m in members}), members,
                              group_pairs(conn, [m.image_id for m in members]) if row.kind == "near" else [])


def group_pairs(conn: Connection, image_ids: list[int]) -> list[PairEvidence]:
    """The stored verdicts between the pictures of IMAGE_IDS (one image per content), strongest first."""
    # Verdicts are stored between contents, so a picture without a hash (never read) has none.
    content_of = {image_id: content for image_id, content in conn.execute(
        select(Image.id, Image.content_hash).where(Image.id.in_(image_ids))) if content is not None}
    first_of: dict[str, int] = {}
    for image_id in sorted(content_of):
        first_of.setdefault(content_of[image_id], image_id)
    contents = sorted(first_of)
    wanted = [(a, b) for k, a in enumerate(contents) for b in contents[k + 1:]]
    found = pair_evidence(conn, wanted)
    pairs = [PairEvidence(first_of[a], first_of[b], bool(e["same"]), e["score"], e["inliers"], e["overlap"],
                          e["angle"], e["scale"], bool(e["flipped"]), e["dx"], e["dy"], e["method"])
             for (a, b), e in found.items()]
    return sorted(pairs, key=lambda p: (not p.same, -p.score, p.first, p.second))
