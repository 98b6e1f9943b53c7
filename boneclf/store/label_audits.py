"""Label audits as stored: an audit's record, its folds' splits and runs, and each study's score and rank.

An audit is found again by what it is (dataset, parts, folds, training options, label version), so that
`bonedb labels suspects` run twice continues the first instead of starting over (see boneclf.ml.label_audit).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, Engine, delete, func, insert, select, update

from boneclf.clock import utc_now
from boneclf.errors import NotFound
from boneclf.results import Result

from .bulk import insert_rows
from .keys import inserted_id
from .schema import Dataset, LabelAudit, LabelAuditFold, LabelAuditStudy, Patient, Study

_audits = LabelAudit.__table__
_folds = LabelAuditFold.__table__
_studies = LabelAuditStudy.__table__


@dataclass
class AuditRecord(Result):
    id: int
    dataset: str
    dataset_id: int
    parts: list[str]
    folds: int
    parameters: dict
    label_version: int | None
    method: str
    status: str  # running or finished
    created_at: datetime
    finished_at: datetime | None
    runs: list[int | None]  # per fold, once trained
    studies: int = 0  # scored


@dataclass
class SuspectRow(Result):
    """One study of an audit, as a steward reads it (most suspicious first)."""

    rank: int
    score: float  # cleanlab's label quality, 0..1: low is suspicious
    flagged: bool  # cleanlab's find_label_issues says its label is likely wrong
    dataset: str
    patient: str
    part: str
    study: int
    label: int  # as scored
    probability: float  # out of fold, of abnormal
    fold: int
    current_label: int | None  # today's (a review since may have changed it)
    study_id: int


def _audit_query():
    return select(_audits, Dataset.name.label("dataset")).join(Dataset, Dataset.id == _audits.c.dataset_id)


def _record(conn: Connection, row) -> AuditRecord:
    folds = dict(conn.execute(select(_folds.c.fold, _folds.c.run_id).where(_folds.c.audit_id == row.id)).all())
    scored = conn.execute(select(func.count()).select_from(_studies).where(_studies.c.audit_id == row.id)).scalar_one()
    return AuditRecord(row.id, row.dataset, row.dataset_id, list(row.parts), row.folds, row.parameters,
                       row.label_version, row.method, row.status, row.created_at, row.finished_at,
                       [folds.get(k) for k in range(row.folds)], scored)


def find_audit(conn: Connection, dataset_id: int, parts: list[str], folds: int, parameters: dict,
               label_version: int | None) -> AuditRecord | None:
    """The newest audit made with exactly these settings on these labels, if there is one."""
    rows = conn.execute(_audit_query().where(_audits.c.dataset_id == dataset_id, _audits.c.folds == folds)
                        .order_by(_audits.c.id.desc())).all()
    for row in rows:  # JSON columns compare in Python: backends disagree on JSON equality
        if list(row.parts) == parts and row.parameters == parameters and row.label_version == label_version:
            return _record(conn, row)
    return None


def create_audit(conn: Connection, dataset_id: int, parts: list[str], folds: int, parameters: dict,
                 label_version: int | None, method: str) -> int:
    return inserted_id(conn.execute(insert(_audits).values(
        dataset_id=dataset_id, parts=parts, folds=folds, parameters=parameters, label_version=label_version,
        method=method, status="running", created_at=utc_now())))


def set_fold(engine: Engine, audit_id: int, fold: int, *, split_id: int, run_id: int | None) -> None:
    with engine.begin() as conn:
        conn.execute(delete(_folds).where(_folds.c.audit_id == audit_id, _folds.c.fold == fold))
        conn.execute(insert(_folds).values(audit_id=audit_id, fold=fold, split_id=split_id, run_id=run_id))


# (study id, fold, label, probability, score, rank, flagged)
ScoreRow = tuple[int, int, int, float, float, int, bool]


def store_scores(engine: Engine, audit_id: int, rows: list[ScoreRow]) -> None:
    """Each study's score and rank, and the audit finished, in one transaction (a rerun replaces them)."""
    with engine.begin() as conn:
        conn.execute(delete(_studies).where(_studies.c.audit_id == audit_id))
        insert_rows(conn, _studies, ("audit_id", "study_id", "fold", "label", "probability", "score", "rank",
                                     "flagged"), [(audit_id, *row) for row in rows])
        conn.execute(update(_audits).where(_audits.c.id == audit_id).values(status="finished",
                                                                            finished_at=utc_now()))


def get_audit(engine: Engine, audit_id: int) -> AuditRecord:
    with engine.connect() as conn:
        row = conn.execute(_audit_query().where(_audits.c.id == audit_id)).first()
        if row is None:
            raise NotFound(f"no label audit {audit_id}: `bonedb labels audits` lists them")
        return _record(conn, row)


def list_audits(engine: Engine, dataset: str | None = None) -> list[AuditRecord]:
    query = _audit_query().order_by(_audits.c.id)
    if dataset is not None:
        query = query.where(Dataset.name == dataset)
    with engine.connect() as conn:
        return [_record(conn, row) for row in conn.execute(query).all()]


def suspects(engine: Engine, audit_id: int, limit: int | None = None) -> list[SuspectRow]:
    """An audit's studies, most suspicious first."""
    query = (select(_studies.c.rank, _studies.c.score, _studies.c.flagged, Dataset.name, Patient.patient_key,
                    Study.body_part, Study.study_number, _studies.c.label, _studies.c.probability, _studies.c.fold,
                    Study.label, Study.id)
             .join(Study, Study.id == _studies.c.study_id)
             .join(Patient, Patient.id == Study.patient_id)
             .join(Dataset, Dataset.id == Study.dataset_id)
             .where(_studies.c.audit_id == audit_id).order_by(_studies.c.rank))
    if limit is not None:
        query = query.limit(limit)
    with engine.connect() as conn:
        return [SuspectRow(rank, score, bool(flagged), dataset, f"patient{patient}", part, number, label,
                           probability, fold, current, study_id)
                for rank, score, flagged, dataset, patient, part, number, label, probability, fold, current, study_id
                in conn.execute(query)]


def audit_exists(conn: Connection, audit_id: int) -> bool:
    return conn.execute(select(_audits.c.id).where(_audits.c.id == audit_id)).first() is not None
