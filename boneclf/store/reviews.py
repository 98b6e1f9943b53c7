"""Review decisions: a steward says a study's label is right or wrong, or a duplicate group is or is not one.

A review is a record beside the data, never a change to it: a disputed label stays what it is
until an ingest relabels it (`bonedb ingest --labels-from ...`). Reviews appear in `bonedb history`
(provenance.py reads them as events) and on the study and duplicate-group pages of `bonedb serve`.
"""

from __future__ import annotations

import getpass
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, insert, select

from boneclf.clock import utc_now
from boneclf.errors import BonedbError, NotFound
from boneclf.results import Result

from .keys import inserted_id
from .schema import DuplicateMember, Review, Study

_reviews = Review.__table__

LABEL_DECISIONS = ("label confirmed", "label disputed")
DUPLICATE_DECISIONS = ("duplicate confirmed", "duplicate rejected")
MAX_NOTE = 4000


def default_reviewer() -> str:
    """The operating-system user: who is at the keyboard when no name is given."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


@dataclass
class ReviewRecord(Result):
    id: int
    study_id: int | None
    group_id: int | None
    members: list[int] | None  # a duplicate group's image ids when it was reviewed
    decision: str
    label: int | None  # the study's label when it was reviewed
    note: str | None
    reviewer: str
    created_at: datetime


def _clean(decision: str, note: str | None, reviewer: str | None) -> tuple[str | None, str]:
    note = (note or "").strip() or None
    reviewer = (reviewer or "").strip() or default_reviewer()
    if len(reviewer) > 128:
        raise BonedbError("reviewer: at most 128 characters")
    if note is not None and len(note) > MAX_NOTE:
        raise BonedbError(f"note: at most {MAX_NOTE} characters")
    if decision == "label disputed" and note is None:
        raise BonedbError("a disputed label needs a note saying why (what the label should be, and what shows it)")
    return note, reviewer


def review_study(engine: Engine, study_id: int, decision: str, *, note: str | None = None,
                 reviewer: str | None = None) -> ReviewRecord:
    """Record a label decision on a study. The label itself is left as it is."""
    if decision not in LABEL_DECISIONS:
        raise BonedbError(f"decision {decision!r} on a study: choose {' or '.join(LABEL_DECISIONS)}")
    note, reviewer = _clean(decision, note, reviewer)
    with engine.begin() as conn:
        label = conn.execute(select(Study.label).where(Study.id == study_id)).scalar_one_or_none()
        if label is None:
            raise NotFound(f"no study {study_id}")
        return _insert(conn, study_id=study_id, group_id=None, members=None, decision=decision, label=label,
                       note=note, reviewer=reviewer)


def review_group(engine: Engine, group_id: int, decision: str, *, note: str | None = None,
                 reviewer: str | None = None) -> ReviewRecord:
    """Record a decision on a duplicate group, with the image ids it holds now: groups are recomputed
    wholesale (new ids), so the members say what was judged."""
    if decision not in DUPLICATE_DECISIONS:
        raise BonedbError(f"decision {decision!r} on a duplicate group: choose {' or '.join(DUPLICATE_DECISIONS)}")
    note, reviewer = _clean(decision, note, reviewer)
    with engine.begin() as conn:
        members = sorted(conn.execute(
            select(DuplicateMember.image_id).where(DuplicateMember.group_id == group_id)).scalars())
        if not members:
            raise NotFound(f"no duplicate group {group_id}")
        return _insert(conn, study_id=None, group_id=group_id, members=members, decision=decision, label=None,
                       note=note, reviewer=reviewer)


def _insert(conn, **values) -> ReviewRecord:
    values["created_at"] = utc_now()
    review_id = inserted_id(conn.execute(insert(_reviews).values(**values)))
    return ReviewRecord(id=review_id, **values)


def reviews_of(engine: Engine, *, study_id: int | None = None, group_id: int | None = None) -> list[ReviewRecord]:
    """A study's or a group's reviews, oldest first (a group's: those made under its current id)."""
    query = select(_reviews).order_by(_reviews.c.id)
    if study_id is not None:
        query = query.where(_reviews.c.study_id == study_id)
    if group_id is not None:
        query = query.where(_reviews.c.group_id == group_id)
    with engine.connect() as conn:
        return [ReviewRecord(**row._mapping) for row in conn.execute(query)]
