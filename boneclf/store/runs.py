"""Training runs and their evaluations in the database: created when a job starts, closed however it ends."""

from __future__ import annotations

import platform
from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy import Connection, Engine, insert, select, update

from boneclf.errors import BonedbError
from boneclf.results import Result, fmt

from .schema import Evaluation, TrainingRun

_runs = TrainingRun.__table__
_evaluations = Evaluation.__table__
STATUSES = ("running", "finished", "failed", "interrupted")


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


@dataclass
class RunRecord(Result):
    """One row of training_runs, typed."""

    id: int
    stage: str
    parts: list[str]
    architecture: str
    parameters: dict
    image_spec: dict
    split_id: int
    split_name: str
    split_hash: str
    label_version: int | None  # of the labels it trained on: its split's pinned ones
    status: str
    started_at: datetime
    finished_at: datetime | None
    host: str
    tf_version: str
    metrics: dict | None
    artifact_dir: str
    error: str | None

    @property
    def validation_score(self) -> float:
        """The figure runs are ranked by: study kappa for stage 2, accuracy for stage 1."""
        metrics = self.metrics or {}
        if "study" in metrics:
            value = metrics["study"].get("kappa")
        else:
            value = metrics.get("accuracy")
        return float("-inf") if value is None or value != value else float(value)

    def headline(self) -> str:
        return headline(self.metrics)


def headline(metrics: dict | None) -> str:
    """Validation figures in a few words, each labelled (image accuracy and study kappa differ)."""
    if not metrics:
        return ""
    if "image" in metrics:
        return (f"val image accuracy {fmt(metrics['image']['accuracy'])}, AUC {fmt(metrics['image']['auc'])}, "
                f"study kappa {fmt(metrics['study']['kappa'])}")
    return f"val accuracy {fmt(metrics.get('accuracy'))}"


def _record(row) -> RunRecord:
    return RunRecord(**dict(row._mapping))


def create_run(engine: Engine, *, stage: str, parts: tuple[str, ...], architecture: str, parameters: dict,
               image_spec: dict, split, label_version: int | None, tf_version: str, runs_dir: str) -> int:
    with engine.begin() as conn:
        run_id = conn.execute(insert(_runs).values(
            stage=stage, parts=list(parts), architecture=architecture, parameters=parameters, image_spec=image_spec,
            split_id=split.id, split_name=split.name, split_hash=split.content_hash, label_version=label_version,
            status="running",
            host=platform.node()[:255], tf_version=tf_version, artifact_dir="", started_at=_now(),
        )).inserted_primary_key[0]
        # The folder is named after the id, known only now.
        conn.execute(update(_runs).where(_runs.c.id == run_id).values(artifact_dir=f"{runs_dir}/{run_id}"))
    return run_id


def set_status(engine: Engine, run_id: int, status: str, *, metrics: dict | None = None,
               error: str | None = None) -> None:
    values = {"status": status, "finished_at": None if status == "running" else _now(), "error": error}
    if metrics is not None:
        values["metrics"] = metrics
    with engine.begin() as conn:
        conn.execute(update(_runs).where(_runs.c.id == run_id).values(**values))


def get_run(engine: Engine, run_id: int) -> RunRecord:
    with engine.connect() as conn:
        row = conn.execute(select(_runs).where(_runs.c.id == run_id)).first()
    if row is None:
        raise BonedbError(f"no training run {run_id}: `bonedb runs list` shows the runs")
    return _record(row)


def list_runs(engine: Engine, *, stage: str | None = None, status: str | None = None) -> list[RunRecord]:
    query = select(_runs).order_by(_runs.c.id)
    if stage:
        query = query.where(_runs.c.stage == stage)
    if status:
        query = query.where(_runs.c.status == status)
    with engine.connect() as conn:
        return [_record(row) for row in conn.execute(query)]


def runs_using_split(conn: Connection, split_id: int) -> list[int]:
    """Ids of the runs trained on a split, read in the caller's transaction."""
    return list(conn.execute(select(_runs.c.id).where(_runs.c.split_id == split_id)).scalars())


@dataclass
class EvaluationRecord(Result):
    id: int
    run_id: int
    subset: str
    metrics: dict
    split_hash: str | None
    labels: str | None  # pinned or current (None: never recorded)
    label_version: int | None
    created_at: datetime


def save_evaluation(engine: Engine, run_id: int, subset: str, metrics: dict, *, split_hash: str, labels: str,
                    label_version: int | None) -> int:
    with engine.begin() as conn:
        return conn.execute(insert(_evaluations).values(
            run_id=run_id, subset=subset, metrics=metrics, split_hash=split_hash, labels=labels,
            label_version=label_version, created_at=_now())).inserted_primary_key[0]


def latest_evaluation(engine: Engine, run_id: int, subset: str | None = None) -> EvaluationRecord | None:
    query = select(_evaluations).where(_evaluations.c.run_id == run_id).order_by(_evaluations.c.id.desc())
    if subset:
        query = query.where(_evaluations.c.subset == subset)
    with engine.connect() as conn:
        row = conn.execute(query.limit(1)).first()
    return None if row is None else EvaluationRecord(**dict(row._mapping))
