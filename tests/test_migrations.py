"""Migrations are the only way the schema is made, and they match the ORM on every backend."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from boneclf import migrate
from boneclf.bodyparts import BODY_PARTS
from boneclf.errors import SchemaNotAtHead
from boneclf.ingest import ingest_mura
from boneclf.schema import Base

TABLES = {"datasets", "patients", "studies", "images"}


def test_empty_database_is_refused_with_remedy(bare_engine):
    with pytest.raises(SchemaNotAtHead, match="run `bonedb db upgrade`"):
        migrate.require_head(bare_engine)
    assert not TABLES & set(inspect(bare_engine).get_table_names())


def test_upgrade_down_and_up_again(bare_engine):
    before, after = migrate.upgrade(bare_engine)
    assert (before, after) == (None, migrate.head_revision())
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
    assert migrate.upgrade(engine) == (migrate.head_revision(), migrate.head_revision())


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
