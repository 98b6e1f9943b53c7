"""Training runs and their evaluations in the database: created when a job starts, closed however it ends."""

from __future__ import annotations

import platform
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, Engine, delete, func, insert, select, update

from boneclf.clock import utc_now
from boneclf.errors import BonedbError, NotFound
from boneclf.results import Result, fmt
from boneclf.scores import BinaryMetrics, StageMetrics, metrics_from_dict

from .keys import inserted_id
from .queries import DatasetFacts, synthetic_note
from .schema import Dataset, Evaluation, SplitVersion, TrainingRun

_runs = TrainingRun.__table__
_evaluations = Evaluation.__table__
STATUSES = ("running", "finished", "failed", "interrupted")


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
    data: str | None = None  # what it trained on: mura, folder, dicom or synthetic; None: split gone
    dataset: str | None = None  # the name of its split's dataset (None: split gone)

    @property
    def scores(self) -> StageMetrics | None:
        """The validation metrics, typed (None: not finished)."""
        return metrics_from_dict(self.metrics)

    @property
    def validation_score(self) -> float:
        """The figure runs are ranked by: study kappa for stage 2, accuracy for stage 1."""
        scores = self.scores
        value = scores.study.kappa if isinstance(scores, BinaryMetrics) else scores.accuracy if scores else None
        return float("-inf") if value is None or value != value else float(value)

    def headline(self) -> str:
        return headline(self.metrics)

    def synthetic_note(self) -> str | None:
        """Said beside the run's figures when it trained on synthetic pictures (None: real data)."""
        return synthetic_note(self.dataset, self.data)


def headline(metrics: dict | None) -> str:
    """Validation figures in a few words, each labelled (image accuracy and study kappa differ)."""
    scores = metrics_from_dict(metrics)
    if scores is None:
        return ""
    if isinstance(scores, BinaryMetrics):
        return (f"val image accuracy {fmt(scores.image.accuracy)}, AUC {fmt(scores.image.auc)}, "
                f"study kappa {fmt(scores.study.kappa)}")
    return f"val accuracy {fmt(scores.accuracy)}"


def _record(row) -> RunRecord:
    return RunRecord(**dict(row._mapping))


def create_run(engine: Engine, *, stage: str, parts: tuple[str, ...], architecture: str, parameters: dict,
               image_spec: dict, split, label_version: int | None, tf_version: str, runs_dir: str) -> int:
    with engine.begin() as conn:
        run_id = inserted_id(conn.execute(insert(_runs).values(
            stage=stage, parts=list(parts), architecture=architecture, parameters=parameters, image_spec=image_spec,
            split_id=split.id, split_name=split.name, split_hash=split.content_hash, label_version=label_version,
            status="running",
            host=platform.node()[:255], tf_version=tf_version, artifact_dir="", started_at=utc_now(),
        )))
        # The folder is named after the id, known only now.
        conn.execute(update(_runs).where(_runs.c.id == run_id).values(artifact_dir=f"{runs_dir}/{run_id}"))
    return run_id


def set_status(engine: Engine, run_id: int, status: str, *, metrics: dict | None = None,
               error: str | None = None) -> None:
    values: dict[str, object] = {"status": status, "finished_at": None if status == "running" else utc_now(),
                                 "error": error}
    if metrics is not None:
        values["metrics"] = metrics
    with engine.begin() as conn:
        conn.execute(update(_runs).where(_runs.c.id == run_id).values(**values))


def set_parameters(engine: Engine, run_id: int, parameters: dict) -> None:
    """Record the options a resumed run continues with (only those that may change on resume)."""
    with engine.begin() as conn:
        conn.execute(update(_runs).where(_runs.c.id == run_id).values(parameters=parameters))


def _with_data(conn: Connection, records: list[RunRecord]) -> list[RunRecord]:
    """RECORDS with what each trained on filled in: a run's figures mean something else on synthetic
    pictures, so every way of reading runs says what the data is."""
    found = conn.execute(select(SplitVersion.id, Dataset.name, Dataset.kind, Dataset.synthetic)
                         .join(Dataset, Dataset.id == SplitVersion.dataset_id)
                         .where(SplitVersion.id.in_({r.split_id for r in records})))
    facts = {split_id: DatasetFacts(name, kind, bool(synthetic)) for split_id, name, kind, synthetic in found}
    for record in records:
        fact = facts.get(record.split_id)
        if fact is not None:
            record.data, record.dataset = fact.nature, fact.name
    return records


def get_run(engine: Engine, run_id: int) -> RunRecord:
    with engine.connect() as conn:
        row = conn.execute(select(_runs).where(_runs.c.id == run_id)).first()
        if row is None:
            raise NotFound(f"no training run {run_id}: `bonedb runs list` shows the runs")
        [record] = _with_data(conn, [_record(row)])
    return record


def get_runs(engine: Engine, run_ids: list[int]) -> list[RunRecord]:
    """Runs RUN_IDS in the order given (repeats kept), read in two queries however many."""
    with engine.connect() as conn:
        found = {r.id: r for r in _with_data(conn, [_record(row) for row in conn.execute(
            select(_runs).where(_runs.c.id.in_(set(run_ids))))])}
    missing = [run_id for run_id in run_ids if run_id not in found]
    if missing:
        raise BonedbError(f"no training run {missing[0]}: `bonedb runs list` shows the runs")
    return [found[run_id] for run_id in run_ids]


def list_runs(engine: Engine, *, stage: str | None = None, status: str | None = None,
              latest: bool = False) -> list[RunRecord]:
    """Runs in the order they started; with `latest`, only the newest one that matches."""
    query = select(_runs).order_by(_runs.c.id.desc() if latest else _runs.c.id)
    if stage:
        query = query.where(_runs.c.stage == stage)
    if status:
        query = query.where(_runs.c.status == status)
    if latest:
        query = query.limit(1)
    with engine.connect() as conn:
        return _with_data(conn, [_record(row) for row in conn.execute(query)])


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
        return inserted_id(conn.execute(insert(_evaluations).values(
            run_id=run_id, subset=subset, metrics=metrics, split_hash=split_hash, labels=labels,
            label_version=label_version, created_at=utc_now())))


def latest_evaluation(engine: Engine, run_id: int, subset: str | None = None) -> EvaluationRecord | None:
    query = select(_evaluations).where(_evaluations.c.run_id == run_id).order_by(_evaluations.c.id.desc())
    if subset:
        query = query.where(_evaluations.c.subset == subset)
    with engine.connect() as conn:
        row = conn.execute(query.limit(1)).first()
    return None if row is None else EvaluationRecord(**dict(row._mapping))


def latest_evaluations(engine: Engine, run_ids: list[int], subset: str | None = None) -> dict[int, EvaluationRecord]:
    """run id -> its latest evaluation (on SUBSET, when given), for the runs that have one, in one query."""
    newest = select(func.max(_evaluations.c.id)).where(_evaluations.c.run_id.in_(set(run_ids)))
    if subset:
        newest = newest.where(_evaluations.c.subset == subset)
    query = select(_evaluations).where(_evaluations.c.id.in_(newest.group_by(_evaluations.c.run_id)))
    with engine.connect() as conn:
        return {row.run_id: EvaluationRecord(**dict(row._mapping)) for row in conn.execute(query)}


def count_evaluations(engine: Engine, run_ids: list[int]) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(_evaluations)
                            .where(_evaluations.c.run_id.in_(run_ids))).scalar_one()


def delete_run_rows(engine: Engine, run_ids: list[int]) -> None:
    """Delete runs and their evaluations, in one transaction (their folders are the run folder's business)."""
    with engine.begin() as conn:
        conn.execute(delete(_evaluations).where(_evaluations.c.run_id.in_(run_ids)))
        conn.execute(delete(_runs).where(_runs.c.id.in_(run_ids)))


def record_imported_run(engine: Engine, record: dict, artifact_dir: str) -> RunRecord:
    """Record a finished run trained elsewhere from an export (its run.json as RECORD), on the stored split
    whose content hash it trained on; refuses a hash this database does not hold and a folder recorded twice."""
    from .schema import SplitVersion

    splits = SplitVersion.__table__
    with engine.begin() as conn:
        twice = conn.execute(select(_runs.c.id).where(_runs.c.artifact_dir == artifact_dir)).first()
        if twice is not None:
            raise BonedbError(f"{artifact_dir} is already recorded as run {twice.id} (`bonedb runs show {twice.id}`)")
        matches = conn.execute(select(splits.c.id, splits.c.name).where(splits.c.content_hash == record["split_hash"])
                               .order_by(splits.c.id)).all()
        if not matches:
            named = conn.execute(select(splits.c.content_hash).where(splits.c.name == record["split_name"])).first()
            why = (f"this database's split {record['split_name']!r} has another hash ({named.content_hash[:16]}), "
                   "so it holds other images or labels" if named else
                   f"this database has no split {record['split_name']!r} and none with that hash")
            raise BonedbError(f"{artifact_dir} was trained on split {record['split_name']!r} with content hash "
                              f"{record['split_hash'][:16]}, but {why}: import it into the database the export "
                              "was made from")
        split = next((m for m in matches if m.name == record["split_name"]), matches[0])
        run_id = inserted_id(conn.execute(insert(_runs).values(
            stage=record["stage"], parts=list(record["parts"]), architecture=record["architecture"],
            parameters=record["parameters"], image_spec=record["image_spec"], split_id=split.id,
            split_name=split.name, split_hash=record["split_hash"], label_version=record.get("label_version"),
            status=record["status"], host=str(record.get("host", ""))[:255],
            tf_version=str(record.get("tf_version", ""))[:32], metrics=record.get("metrics"),
            artifact_dir=artifact_dir, error=record.get("error"),
            started_at=datetime.fromisoformat(record["started_at"]),
            finished_at=datetime.fromisoformat(record["finished_at"]) if record.get("finished_at") else None,
        )))
    return get_run(engine, run_id)
