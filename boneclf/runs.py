"""Training runs in the database: created when a job starts, closed however it ends."""

from __future__ import annotations

import json
import platform
from datetime import datetime, timezone

from sqlalchemy import Connection, Engine, insert, select, update

from .errors import BonedbError
from .migrate import require_head
from .schema import Evaluation, TrainingRun

_runs = TrainingRun.__table__
_evaluations = Evaluation.__table__
STATUSES = ("running", "finished", "failed", "interrupted")


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def create_run(engine: Engine, *, stage: str, parts: tuple[str, ...], architecture: str, parameters: dict,
               split, tf_version: str, runs_dir: str) -> int:
    with engine.begin() as conn:
        run_id = conn.execute(insert(_runs).values(
            stage=stage, parts=",".join(parts), architecture=architecture,
            parameters=json.dumps(parameters, sort_keys=True), split_id=split.id, split_name=split.name,
            split_hash=split.content_hash, status="running", host=platform.node()[:255], tf_version=tf_version,
            artifact_dir="",
        )).inserted_primary_key[0]
        # The folder is named after the id, known only now.
        conn.execute(update(_runs).where(_runs.c.id == run_id).values(artifact_dir=f"{runs_dir}/{run_id}"))
    return run_id


def set_status(engine: Engine, run_id: int, status: str, *, metrics: dict | None = None,
               error: str | None = None) -> None:
    values = {"status": status, "finished_at": None if status == "running" else _now(), "error": error}
    if metrics is not None:
        values["metrics"] = json.dumps(metrics, sort_keys=True)
    with engine.begin() as conn:
        conn.execute(update(_runs).where(_runs.c.id == run_id).values(**values))


def get_run(engine: Engine, run_id: int):
    require_head(engine)
    with engine.connect() as conn:
        row = conn.execute(select(_runs).where(_runs.c.id == run_id)).first()
    if row is None:
        raise BonedbError(f"no training run {run_id}: `bonedb runs list` shows the runs")
    return row


def run_as_dict(row) -> dict:
    data = dict(row._mapping)
    data["parameters"] = json.loads(data["parameters"])
    data["metrics"] = json.loads(data["metrics"]) if data["metrics"] else None
    data["parts"] = data["parts"].split(",")
    for key in ("started_at", "finished_at"):
        data[key] = data[key].isoformat(timespec="seconds") if data[key] else None
    return data


def list_runs(engine: Engine, *, stage: str | None = None, status: str | None = None) -> list[dict]:
    require_head(engine)
    query = select(_runs).order_by(_runs.c.id)
    if stage:
        query = query.where(_runs.c.stage == stage)
    if status:
        query = query.where(_runs.c.status == status)
    with engine.connect() as conn:
        return [run_as_dict(row) for row in conn.execute(query)]


def runs_using_split(conn: Connection, split_id: int) -> list[int]:
    """Ids of the runs trained on a split, read in the caller's transaction."""
    return list(conn.execute(select(_runs.c.id).where(_runs.c.split_id == split_id)).scalars())


def save_evaluation(engine: Engine, run_id: int, subset: str, metrics: dict) -> int:
    with engine.begin() as conn:
        return conn.execute(insert(_evaluations).values(
            run_id=run_id, subset=subset, metrics=json.dumps(metrics, sort_keys=True))).inserted_primary_key[0]


def latest_evaluation(engine: Engine, run_id: int, subset: str | None = None) -> dict | None:
    query = select(_evaluations).where(_evaluations.c.run_id == run_id).order_by(_evaluations.c.id.desc())
    if subset:
        query = query.where(_evaluations.c.subset == subset)
    with engine.connect() as conn:
        row = conn.execute(query.limit(1)).first()
    return None if row is None else {"subset": row.subset, "created_at": row.created_at.isoformat(timespec="seconds"),
                                     **json.loads(row.metrics)}
