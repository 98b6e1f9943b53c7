"""Migrations are the only way the schema is made, and they match the ORM on every backend."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from boneclf.bodyparts import BODY_PARTS
from boneclf.data.ingest import ingest_mura
from boneclf.errors import SchemaNotAtHead
from boneclf.store import migrate
from boneclf.store.schema import Base

TABLES = {"datasets", "patients", "studies", "images"}


def test_empty_database_is_refused_with_remedy(bare_engine):
    with pytest.raises(SchemaNotAtHead, match="run `bonedb db upgrade`"):
        migrate.require_head(bare_engine)
    assert not TABLES & set(inspect(bare_engine).get_table_names())


def test_upgrade_down_and_up_again(bare_engine):
    change = migrate.upgrade(bare_engine)
    assert (change.before, change.after) == (None, migrate.head_revision())
    assert TABLES <= set(inspect(bare_engine).get_table_names())
    assert set(BODY_PARTS) <= set(inspect(bare_engine).get_view_names())
    migrate.downgrade(bare_engine, "base")
    assert not TABLES & set(inspect(bare_engine).get_table_names())
    assert not set(BODY_PARTS) & set(inspect(bare_engine).get_view_names())
    migrate.upgrade(bare_engine)
    migrate.require_head(bare_engine)


def test_orm_matches_migrations(engine):
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(context, Base.metadata)
    assert diff == []


def test_upgrade_is_repeatable(engine):
    change = migrate.upgrade(engine)
    assert (change.before, change.after) == (migrate.head_revision(), migrate.head_revision())


def test_per_bone_views_have_the_papers_columns(engine, mura):
    ingest_mura(engine, mura)
    with engine.connect() as conn:
        for part in BODY_PARTS:
            columns = [c["name"] for c in inspect(conn).get_columns(part)]
            assert columns == ["image_path", "is_fractured", "study", "patient_id"]
        rows = conn.execute(text("SELECT image_path, is_fractured, study, patient_id FROM shoulder")).all()
    assert rows, "synth data has shoulder images"
    for path, label, study, patient in rows:
        assert "/XR_SHOULDER/" in path
        assert f"patient{patient}/study{study}_" in path
        assert label == (1 if "_positive/" in path else 0)


def _seed_0003(engine) -> None:
    """Rows as revision 0003 stored them: JSON in text columns (NaN included), parts comma-separated."""
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO datasets (id, name, root, kind, created_at) "
                          "VALUES (1, 'd', '/data', 'mura', '2026-01-01 00:00:00')"))
        conn.execute(text("INSERT INTO split_versions (id, name, dataset_id, kind, parameters, seed, content_hash, "
                          "created_at) VALUES (1, 's', 1, 'bonedb', :p, 42, 'abc', '2026-01-01 00:00:00')"),
                     {"p": '{"dataset": "d", "val": 0.1}'})
        for run_id, arch, params in ((1, "cnn", '{"image_size": 64, "pad": true, "canny": false}'),
                                     (2, "densenet121", '{"image_size": 224}')):
            conn.execute(text(
                "INSERT INTO training_runs (id, stage, parts, architecture, parameters, split_id, split_name, "
                "split_hash, status, started_at, host, tf_version, metrics, artifact_dir) VALUES "
                "(:id, 'fracture', 'humerus,shoulder', :arch, :params, 1, 's', 'abc', 'finished', "
                "'2026-01-01 00:00:00', 'h', '2.21', :metrics, 'runs/1')"),
                {"id": run_id, "arch": arch, "params": params, "metrics": '{"study": {"kappa": NaN, "auc": 0.5}}'})
        conn.execute(text("INSERT INTO evaluations (id, run_id, subset, metrics, created_at) "
                          "VALUES (1, 1, 'test', :m, '2026-01-01 00:00:00')"), {"m": '{"overall": {"auc": NaN}}'})


_RUNS_0004 = sa.table("training_runs", sa.column("id", sa.Integer), sa.column("parts", sa.JSON),
                      sa.column("parameters", sa.JSON), sa.column("metrics", sa.JSON), sa.column("image_spec", sa.JSON))
_EVALUATIONS_0004 = sa.table("evaluations", sa.column("run_id", sa.Integer), sa.column("metrics", sa.JSON))


def _run_0004(engine, run_id: int):
    """A run as revision 0004 stores it (the ORM of today has columns 0004 lacks)."""
    with engine.connect() as conn:
        return conn.execute(sa.select(_RUNS_0004).where(_RUNS_0004.c.id == run_id)).one()


def test_json_columns_migration_converts_rows_up_and_down(bare_engine):
    migrate.upgrade(bare_engine, "0003")
    _seed_0003(bare_engine)
    migrate.upgrade(bare_engine, "0004")
    run = _run_0004(bare_engine, 1)
    assert run.parts == ["humerus", "shoulder"]
    assert run.parameters == {"image_size": 64, "pad": True, "canny": False}
    assert run.metrics == {"study": {"kappa": None, "auc": 0.5}}
    assert run.image_spec == {"size": 64, "pad": True, "canny": False, "channels": 3, "normalization": "unit"}
    assert _run_0004(bare_engine, 2).image_spec["normalization"] == "torch"
    with bare_engine.connect() as conn:
        assert conn.execute(sa.select(_EVALUATIONS_0004.c.metrics)).scalar() == {"overall": {"auc": None}}
    with bare_engine.connect() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM split_assignments")).scalar() == 0
        assert conn.execute(text("SELECT COUNT(*) FROM training_runs")).scalar() == 2

    migrate.downgrade(bare_engine, "0003")
    with bare_engine.connect() as conn:
        parts, params = conn.execute(text("SELECT parts, parameters FROM training_runs WHERE id = 1")).one()
        split_params = conn.execute(text("SELECT parameters FROM split_versions")).scalar()
        assert "image_spec" not in {c["name"] for c in inspect(conn).get_columns("training_runs")}
    assert parts == "humerus,shoulder"
    assert json.loads(params) == {"image_size": 64, "pad": True, "canny": False}
    assert json.loads(split_params) == {"dataset": "d", "val": 0.1}
    migrate.upgrade(bare_engine, "0004")
    assert _run_0004(bare_engine, 1).parts == ["humerus", "shoulder"]
    migrate.upgrade(bare_engine)
