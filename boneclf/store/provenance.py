"""Provenance: the ingest log, each study's label history, label versions, and what changed under a split.

A **label version** names the labels of a dataset at a moment: the id of the latest `ingest_log`
row of that dataset that added or relabeled studies (`bonedb log` lists them), or None for labels
read before bonedb kept a log. A split records the version its labels were pinned at; a run the
version it trained on (its split's); an evaluation the version it scored against. Between two
versions, `bonedb history --since N` shows every change.

History is assembled from event sources, each a function returning `HistoryEvent`s for a
`HistoryFilter`: relabels by ingests and by stewards' decisions (`bonedb labels set`, reason
"review", logged like an ingest so that the label version moves), and review notes (store/reviews.py),
which record a judgement but never change a label.

A review decision stands against later ingests: `reviewed_labels` tells an ingest which studies' labels
a steward set last, and the ingest keeps them and reports the conflict instead of undoing them.
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime

from sqlalchemy import Connection, Engine, Row, and_, distinct, func, insert, or_, select
from sqlalchemy.exc import SQLAlchemyError

from boneclf import __version__
from boneclf.clock import utc_now
from boneclf.errors import BonedbError, InputProblems
from boneclf.results import Result

from .bulk import insert_rows
from .keys import inserted_id
from .queries import SplitRecord, dataset_id_of
from .schema import Dataset, Image, IngestLog, LabelChange, Patient, Review, SplitAssignment, Study

_log = IngestLog.__table__
_history = LabelChange.__table__
_reviews = Review.__table__




@dataclass
class IngestCounts:
    """What an ingest did (or, refused, would have done), as the log keeps it."""

    patients_added: int = 0
    studies_added: int = 0
    images_added: int = 0
    studies_relabeled: int = 0
    images_moved: int = 0
    images_measured: int = 0
    images_unchanged: int = 0
    rows_skipped: int = 0


@dataclass
class IngestRecord:
    """An ingest under way: filled in as it learns, written to the log once when it ends."""

    command: str
    dataset: str
    source_root: str
    options: dict
    started_at: datetime = field(default_factory=utc_now)
    source_sha256: dict[str, str] = field(default_factory=dict)
    counts: IngestCounts = field(default_factory=IngestCounts)

    def _values(self, outcome: str, message: str | None) -> dict:
        return {
            "command": self.command, "dataset": self.dataset, "source_root": self.source_root[:1024],
            "source_sha256": self.source_sha256, "options": self.options, "started_at": self.started_at,
            "finished_at": utc_now(), "host": platform.node()[:255], "bonedb_version": __version__,
            "outcome": outcome, "message": message, **asdict(self.counts),
        }


def log_applied(conn: Connection, record: IngestRecord) -> int:
    """The log row of an ingest that changed the database, in the ingest's own transaction."""
    return inserted_id(conn.execute(insert(_log).values(**record._values("applied", None))))


def log_unapplied(engine: Engine, record: IngestRecord, outcome: str, message: str) -> int | None:
    """The log row of an ingest that was refused, interrupted or failed, in a transaction of its own
    (the ingest's was rolled back). A database that cannot take it (the cause of the failure, perhaps)
    must not hide the original error: None then."""
    try:
        with engine.begin() as conn:
            return inserted_id(conn.execute(insert(_log).values(**record._values(outcome, message[:4000]))))
    except SQLAlchemyError:
        return None


@contextmanager
def logged_if_unapplied(engine: Engine, record: IngestRecord) -> Iterator[None]:
    """Log an ingest that ends in an exception: refused (bad input), interrupted (Ctrl-C) or failed.
    The ingest logs its own success inside its transaction."""
    try:
        yield
    except KeyboardInterrupt:
        log_unapplied(engine, record, "interrupted", "interrupted (Ctrl-C); nothing was written")
        raise
    except InputProblems as exc:
        log_unapplied(engine, record, "refused", f"{exc} (first: {exc.problems[0]})" if exc.problems else str(exc))
        raise
    except BonedbError as exc:
        log_unapplied(engine, record, "refused", str(exc))
        raise
    except Exception as exc:
        log_unapplied(engine, record, "failed", f"{type(exc).__name__}: {exc}")
        raise


# (study id, old label, new label, reason, source)
LabelChangeRow = tuple[int, int, int, str, str | None]

REVIEW = "review"  # label_history.reason of a steward's decision (`bonedb labels set`)


@dataclass(frozen=True)
class ReviewedLabel:
    """A study whose label a steward set last (no ingest has changed it since)."""

    study_id: int
    label: int
    reviewer: str
    log_id: int  # the decision's row in the ingest log


def reviewed_labels(conn: Connection, study_ids) -> dict[int, ReviewedLabel]:
    """Of STUDY_IDS, those whose latest label change is a review decision."""
    ids = sorted(set(study_ids))
    latest: dict[int, Row] = {}
    for start in range(0, len(ids), 500):  # bounded IN lists
        for row in conn.execute(
                select(_history.c.study_id, _history.c.reason, _history.c.new_label, _history.c.reviewer,
                       _history.c.ingest_id)
                .where(_history.c.study_id.in_(ids[start:start + 500])).order_by(_history.c.id)):
            latest[row.study_id] = row
    return {study_id: ReviewedLabel(study_id, row.new_label, row.reviewer or "", row.ingest_id)
            for study_id, row in latest.items() if row.reason == REVIEW}


def log_label_changes(conn: Connection, ingest_id: int, changes: list[LabelChangeRow]) -> None:
    """Every relabel of one ingest, in one executemany."""
    insert_rows(conn, _history, ("ingest_id", "study_id", "old_label", "new_label", "reason", "source"),
                [(ingest_id, *change) for change in changes])


def label_version(conn: Connection, dataset_id: int) -> int | None:
    """The dataset's current label version (see the module's docstring)."""
    name = select(Dataset.name).where(Dataset.id == dataset_id).scalar_subquery()
    return conn.execute(
        select(func.max(_log.c.id)).where(
            _log.c.dataset == name, _log.c.outcome == "applied",
            or_(_log.c.studies_added > 0, _log.c.studies_relabeled > 0),
        )
    ).scalar()


def describe_version(version: int | None) -> str:
    return "from before the ingest log" if version is None else f"as of ingest {version}"


# -- the log ------------------------------------------------------------------------------------


@dataclass
class IngestEntry(Result):
    """One row of the ingest log."""

    id: int
    command: str
    dataset: str
    source_root: str
    source_sha256: dict
    options: dict
    started_at: datetime
    finished_at: datetime
    host: str
    bonedb_version: str
    outcome: str
    message: str | None
    patients_added: int
    studies_added: int
    images_added: int
    studies_relabeled: int
    images_moved: int
    images_measured: int
    images_unchanged: int
    rows_skipped: int


def list_ingests(engine: Engine, dataset: str | None = None) -> list[IngestEntry]:
    query = select(_log).order_by(_log.c.id)
    if dataset is not None:
        query = query.where(_log.c.dataset == dataset)
    with engine.connect() as conn:
        return [IngestEntry(**row._mapping) for row in conn.execute(query)]


# -- what changed under a split -----------------------------------------------------------------


@dataclass
class LabelChanges(Result):
    """Studies of a split whose label today differs from the one the split pinned, and images of it
    that are gone from the dataset since it was made."""

    split: str
    studies: int = 0
    per_part: dict[str, int] = field(default_factory=dict)
    images_removed: int = 0
    pinned_version: int | None = None
    current_version: int | None = None
    subset: str | None = None  # counted in this subset only
    by_review: int = 0  # of STUDIES, those a steward's decision relabelled since (`labels set`, Relabel in serve)

    computed = ("changed",)

    @property
    def changed(self) -> bool:
        return bool(self.studies or self.images_removed)

    def describe(self) -> str:
        """One line for people, e.g. "labels of 10 studies changed since split 's' was made (humerus 4, ...)"."""
        said = []
        if self.studies:
            parts = ", ".join(f"{part} {n}" for part, n in self.per_part.items())
            which = f"{self.subset} " if self.subset else ""
            noun = "study" if self.studies == 1 else "studies"
            review = f"; {self.by_review} by review" if self.by_review else ""
            said.append(f"labels of {self.studies} {which}{noun} changed since split {self.split!r} was made"
                        f" ({parts}{review}; pinned {describe_version(self.pinned_version)}, "
                        f"today {describe_version(self.current_version)})")
        if self.images_removed:
            said.append(f"{self.images_removed} image(s) of split {self.split!r} have been removed from the dataset "
                        "since it was made")
        return "; ".join(said)


def label_changes(conn: Connection, split: SplitRecord, *, parts=None, subset: str | None = None) -> LabelChanges:
    """Set-based: one grouped query over the split's assignments, one count."""
    query = (
        select(Study.body_part, func.count(distinct(Study.id)))
        .select_from(SplitAssignment)
        .join(Image, Image.id == SplitAssignment.image_id)
        .join(Study, Study.id == Image.study_id)
        .where(SplitAssignment.split_id == split.id, SplitAssignment.label != Study.label)
        .group_by(Study.body_part)
    )
    if parts:
        query = query.where(Study.body_part.in_(list(parts)))
    if subset:
        query = query.where(SplitAssignment.subset == subset)
    per_part = dict(sorted(conn.execute(query).all()))
    # Of those, the studies a steward relabelled after the split pinned its labels (versions are ingest log ids).
    reviewed = (query.with_only_columns(func.count(distinct(Study.id))).group_by(None)
                .join(_history, _history.c.study_id == Study.id)
                .where(_history.c.reason == REVIEW, _history.c.ingest_id > (split.label_version or 0)))
    by_review = conn.execute(reviewed).scalar_one() if per_part else 0
    present = conn.execute(
        select(func.count()).select_from(SplitAssignment).where(SplitAssignment.split_id == split.id)
    ).scalar_one()
    return LabelChanges(split.name, sum(per_part.values()), per_part, max(split.images - present, 0),
                        split.label_version, label_version(conn, split.dataset_id), subset, by_review)


# -- history ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HistoryFilter:
    """Which events to show; every event source reads the same filter."""

    dataset_id: int | None = None
    study_id: int | None = None
    since_ingest: int | None = None  # events after this ingest
    since_time: datetime | None = None  # ... and, for events not made by an ingest, after it finished
    ingest: int | None = None  # only events made by this ingest


@dataclass
class HistoryEvent(Result):
    kind: str  # relabel (by an ingest) or review (a steward's decision, the label unchanged)
    at: datetime
    dataset: str
    study: str
    old_label: int | None
    new_label: int | None
    by: str  # e.g. "ingest 3" or "review by alice"
    reason: str  # a relabel's reason, or a review's decision
    source: str | None  # a relabel's CSV line or folder, or a review's note
    study_id: int
    audit_id: int | None = None  # a review decision's label audit, when one flagged the study


def describe_study(patient_key: str, part: str, number: int, split: str) -> str:
    """As ingest names studies: patient00001 shoulder study1 (train)."""
    return f"patient{patient_key} {part} study{number} ({split})"


def _study_columns():
    return (Dataset.name, Patient.patient_key, Study.body_part, Study.study_number, Study.source_split, Study.id)


def _relabel_events(conn: Connection, where: HistoryFilter) -> list[HistoryEvent]:
    query = (
        select(_log.c.finished_at, *_study_columns(), _history.c.old_label, _history.c.new_label,
               _history.c.ingest_id, _history.c.reason, _history.c.source, _history.c.reviewer, _history.c.note,
               _history.c.audit_id)
        .select_from(_history)
        .join(_log, _log.c.id == _history.c.ingest_id)
        .join(Study, Study.id == _history.c.study_id)
        .join(Patient, Patient.id == Study.patient_id)
        .join(Dataset, Dataset.id == Study.dataset_id)
        .order_by(_history.c.id)
    )
    conditions = []
    if where.dataset_id is not None:
        conditions.append(Study.dataset_id == where.dataset_id)
    if where.study_id is not None:
        conditions.append(_history.c.study_id == where.study_id)
    if where.since_ingest is not None:
        conditions.append(_history.c.ingest_id > where.since_ingest)
    if where.ingest is not None:
        conditions.append(_history.c.ingest_id == where.ingest)
    if conditions:
        query = query.where(and_(*conditions))
    return [
        HistoryEvent("relabel", at, dataset, describe_study(patient, part, number, split), old, new,
                     f"ingest {ingest_id}" if reviewer is None else f"review by {reviewer} (log {ingest_id})",
                     reason, source if reviewer is None else note, study_id, audit_id)
        for at, dataset, patient, part, number, split, study_id, old, new, ingest_id, reason, source, reviewer, note,
        audit_id in conn.execute(query)
    ]


def _review_events(conn: Connection, where: HistoryFilter) -> list[HistoryEvent]:
    """Label decisions on studies (a review's label is the study's when reviewed: old and new alike).
    Reviews are not made by ingests: `--ingest N` shows none, `--since N` those after ingest N finished."""
    if where.ingest is not None:
        return []
    query = (
        select(_reviews.c.created_at, *_study_columns(), _reviews.c.label, _reviews.c.reviewer,
               _reviews.c.decision, _reviews.c.note)
        .select_from(_reviews)
        .join(Study, Study.id == _reviews.c.study_id)
        .join(Patient, Patient.id == Study.patient_id)
        .join(Dataset, Dataset.id == Study.dataset_id)
        .order_by(_reviews.c.id)
    )
    if where.dataset_id is not None:
        query = query.where(Study.dataset_id == where.dataset_id)
    if where.study_id is not None:
        query = query.where(_reviews.c.study_id == where.study_id)
    if where.since_time is not None:
        query = query.where(_reviews.c.created_at > where.since_time)
    events = [
        HistoryEvent("review", at, dataset, describe_study(patient, part, number, split), label, label,
                     f"review by {reviewer}", decision, note, study_id)
        for at, dataset, patient, part, number, split, study_id, label, reviewer, decision, note
        in conn.execute(query)
    ]
    return events + _group_review_events(conn, where)


def _group_review_events(conn: Connection, where: HistoryFilter) -> list[HistoryEvent]:
    """A decision on a duplicate group, once for each study its images (as reviewed) belong to."""
    query = (select(_reviews.c.created_at, _reviews.c.group_id, _reviews.c.members, _reviews.c.reviewer,
                    _reviews.c.decision, _reviews.c.note)
             .where(_reviews.c.group_id.is_not(None)).order_by(_reviews.c.id))
    if where.since_time is not None:
        query = query.where(_reviews.c.created_at > where.since_time)
    reviews = conn.execute(query).all()
    image_ids = sorted({i for review in reviews for i in review.members or []})
    studies: dict[int, tuple] = {}
    for start in range(0, len(image_ids), 500):  # bounded IN lists
        studies.update({row[0]: row[1:] for row in conn.execute(
            select(Image.id, *_study_columns(), Study.label, Study.dataset_id)
            .join(Study, Study.id == Image.study_id)
            .join(Patient, Patient.id == Study.patient_id)
            .join(Dataset, Dataset.id == Study.dataset_id)
            .where(Image.id.in_(image_ids[start:start + 500])))})
    events = []
    for at, group_id, members, reviewer, decision, note in reviews:
        seen = set()
        for image_id in members or []:
            if image_id not in studies:
                continue  # the image has since been removed from the dataset
            dataset, patient, part, number, split, study_id, label, dataset_id = studies[image_id]
            if study_id in seen or (where.study_id is not None and study_id != where.study_id) or (
                    where.dataset_id is not None and dataset_id != where.dataset_id):
                continue
            seen.add(study_id)
            events.append(HistoryEvent("review", at, dataset, describe_study(patient, part, number, split), label,
                                       label, f"review by {reviewer}", f"{decision} (group {group_id})", note,
                                       study_id))
    return events


EVENT_SOURCES: tuple[Callable[[Connection, HistoryFilter], list[HistoryEvent]], ...] = (
    _relabel_events, _review_events)


@dataclass
class LabelHistory(Result):
    dataset: str | None
    study: str | None  # set when one study was asked for
    current_label: int | None
    since: int | None
    ingest: int | None
    events: list[HistoryEvent]


def label_history(
    engine: Engine, *, dataset: str | None = None, study: tuple[str, str, int] | None = None,
    since: int | None = None, ingest: int | None = None,
) -> LabelHistory:
    """Label changes of one study (dataset, patient, part, number), of a dataset, or of everything,
    optionally only those after ingest `since` or made by ingest `ingest`, oldest first."""
    if study is not None and dataset is None:
        raise BonedbError("a study is named within its dataset: bonedb history DATASET PATIENT PART NUMBER")
    with engine.connect() as conn:
        dataset_id = dataset_id_of(conn, dataset) if dataset is not None else None
        since_time = _ingest_time(conn, since) if since is not None else None
        if ingest is not None:
            _ingest_time(conn, ingest)
        study_id = current = described = None
        if study is not None:
            assert dataset is not None and dataset_id is not None  # a study is named within its dataset (above)
            study_id, current, described = find_study(conn, dataset_id, dataset, *study)
        where = HistoryFilter(dataset_id, study_id, since, since_time, ingest)
        events = [event for source in EVENT_SOURCES for event in source(conn, where)]
    events.sort(key=lambda e: e.at)  # stable: each source's own order is kept within a moment
    return LabelHistory(dataset, described, current, since, ingest, events)


def _ingest_time(conn: Connection, ingest_id: int) -> datetime:
    found = conn.execute(select(_log.c.finished_at).where(_log.c.id == ingest_id)).scalar_one_or_none()
    if found is None:
        raise BonedbError(f"no ingest {ingest_id} in the log: `bonedb log` lists them")
    return found


def find_study(conn: Connection, dataset_id: int, dataset: str, patient: str, part: str,
               number: int) -> tuple[int, int | None, str]:
    """(study id, label today, the study described) of PATIENT PART NUMBER in DATASET, or a one-line error."""
    key = patient.removeprefix("patient")
    rows = conn.execute(
        select(Study.id, Study.label, Study.body_part, Study.study_number, Study.source_split)
        .join(Patient, Patient.id == Study.patient_id)
        .where(Study.dataset_id == dataset_id, Patient.patient_key == key)
        .order_by(Study.body_part, Study.study_number)
    ).all()
    for study_id, label, found_part, found_number, split in rows:
        if (found_part, found_number) == (part, number):
            return study_id, label, describe_study(key, part, number, split)
    has = (f"patient{key} has " + ", ".join(f"{r.body_part} {r.study_number}" for r in rows)) if rows \
        else f"dataset {dataset!r} has no patient{key}"
    raise BonedbError(f"no study patient{key} {part} {number} in dataset {dataset!r} ({has}): "
                      "name it as PATIENT PART NUMBER, e.g. patient00001 shoulder 1")
