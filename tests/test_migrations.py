"""Migrations are the only way the schema is made, and they match the ORM on every backend."""

from __future__ import annotations

import hashlib
import json

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from boneclf.data.ingest import ingest_mura
from boneclf.errors import SchemaNotAtHead
from boneclf.store import migrate
from boneclf.store.schema import Base
from boneclf.vocabulary import BODY_PARTS

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


_PATHS = ("MURA-v1.1/train/XR_HAND/patient00001/study1_positive/image1.png",
          "MURA-v1.1/train/XR_HAND/patient00001/study1_positive/image2.png",
          "MURA-v1.1/valid/XR_HAND/patient00002/study1_negative/image1.png")
_SUBSETS = ("train", "train", "test")


def _old_split_hash() -> str:
    """The content hash as revisions 0002 to 0004 computed it: sorted (path, subset) lines."""
    digest = hashlib.sha256()
    for path, subset in sorted(zip(_PATHS, _SUBSETS)):
        digest.update(f"{path}\t{subset}\n".encode())
    return digest.hexdigest()


def _seed_0004(engine) -> None:
    """Two studies, three images, a split of them, a run on it and its evaluation, as revision 0004 stored them."""
    when = "2026-01-01 00:00:00"
    with engine.begin() as conn:
        conn.execute(text(f"INSERT INTO datasets (id, name, root, kind, created_at) VALUES (1, 'd', '/data', 'mura', "
                          f"'{when}')"))
        conn.execute(text("INSERT INTO patients (id, dataset_id, patient_key) VALUES (1, 1, '00001'), (2, 1, '00002')"))
        conn.execute(text("INSERT INTO studies (id, dataset_id, patient_id, body_part, source_split, study_number, "
                          "label) VALUES (1, 1, 1, 'hand', 'train', 1, 1), (2, 1, 2, 'hand', 'valid', 1, 0)"))
        for image_id, (path, study) in enumerate(zip(_PATHS, (1, 1, 2)), start=1):
            conn.execute(text("INSERT INTO images (id, dataset_id, study_id, path, image_number) "
                              "VALUES (:id, 1, :study, :path, :number)"),
                         {"id": image_id, "study": study, "path": path, "number": 2 if image_id == 2 else 1})
        conn.execute(text("INSERT INTO split_versions (id, name, dataset_id, kind, parameters, seed, content_hash, "
                          "created_at) VALUES (1, 's', 1, 'bonedb', :p, 42, :h, :w)"),
                     {"p": '{"dataset": "d"}', "h": _old_split_hash(), "w": when})
        for image_id, subset in enumerate(_SUBSETS, start=1):
            conn.execute(text("INSERT INTO split_assignments (split_id, image_id, subset) VALUES (1, :i, :s)"),
                         {"i": image_id, "s": subset})
        conn.execute(text(
            "INSERT INTO training_runs (id, stage, parts, architecture, parameters, image_spec, split_id, split_name, "
            "split_hash, status, started_at, host, tf_version, artifact_dir) VALUES (1, 'fracture', :parts, 'cnn', "
            ":params, :spec, 1, 's', :h, 'finished', :w, 'h', '2.21', 'runs/1')"),
            {"parts": '["hand"]', "params": '{"image_size": 32}', "h": _old_split_hash(), "w": when,
             "spec": '{"size": 32, "pad": false, "canny": false, "channels": 3, "normalization": "unit"}'})
        conn.execute(text("INSERT INTO evaluations (id, run_id, subset, metrics, created_at) "
                          "VALUES (1, 1, 'test', :m, :w)"), {"m": '{"overall": {}}', "w": when})


def test_provenance_migration_pins_labels_up_and_down(bare_engine):
    from boneclf.data.splits import Record, assignment_hash, split_summary
    from boneclf.store.provenance import list_ingests
    from boneclf.store.runs import get_run, latest_evaluation

    migrate.upgrade(bare_engine, "0004")
    _seed_0004(bare_engine)
    migrate.upgrade(bare_engine)  # through 0006 to head: the library below reads the head schema

    with bare_engine.connect() as conn:
        labels = dict(conn.execute(text("SELECT image_id, label FROM split_assignments")).all())
    assert labels == {1: 1, 2: 1, 3: 0}, "each image pinned at its study's label"
    records = [Record(i, path, "p", 1, "hand", labels[i], "train") for i, path in enumerate(_PATHS, start=1)]
    new_hash = assignment_hash(records, dict(enumerate(_SUBSETS, start=1)))
    summary = split_summary(bare_engine, "s")
    assert summary.content_hash == new_hash != _old_split_hash()
    assert summary.label_version is None and not summary.label_changes.changed
    assert sum(c.images for c in summary.counts) == 3 and {(c.subset, c.label) for c in summary.counts} == {
        ("train", 1), ("test", 0)}
    run = get_run(bare_engine, 1)
    assert run.split_hash == new_hash and run.label_version is None
    evaluation = latest_evaluation(bare_engine, 1)
    assert (evaluation.split_hash, evaluation.labels, evaluation.label_version) == (new_hash, "current", None)
    assert list_ingests(bare_engine) == []
    with bare_engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO ingest_log (id, command, dataset, source_root, source_sha256, options, started_at, "
            "finished_at, host, bonedb_version, outcome, patients_added, studies_added, images_added, "
            "studies_relabeled, images_moved, images_measured, images_unchanged, rows_skipped) VALUES "
            "(1, 'ingest', 'd', '/data', '{}', '{}', '2026-01-02 00:00:00', '2026-01-02 00:00:00', 'h', '0.1.0', "
            "'applied', 0, 0, 0, 1, 0, 0, 3, 0)"))
        conn.execute(text("INSERT INTO label_history (study_id, ingest_id, old_label, new_label, reason, source) "
                          "VALUES (2, 1, 0, 1, 'labels csv', 'MURA-v1.1/valid_labeled_studies.csv:1')"))
        conn.execute(text("UPDATE studies SET label = 1 WHERE id = 2"))
    assert split_summary(bare_engine, "s").label_changes.per_part == {"hand": 1}

    migrate.downgrade(bare_engine, "0004")
    with bare_engine.connect() as conn:
        tables = set(inspect(conn).get_table_names())
        assert not {"ingest_log", "label_history"} & tables
        assert "label" not in {c["name"] for c in inspect(conn).get_columns("split_assignments")}
        assert not {"images", "label_version"} & {c["name"] for c in inspect(conn).get_columns("split_versions")}
        assert conn.execute(text("SELECT content_hash FROM split_versions")).scalar() == _old_split_hash()
        assert conn.execute(text("SELECT split_hash FROM training_runs")).scalar() == _old_split_hash()
        assert conn.execute(text("SELECT COUNT(*) FROM split_assignments")).scalar() == 3
        assert conn.execute(text("SELECT COUNT(*) FROM evaluations")).scalar() == 1
    migrate.upgrade(bare_engine)
    migrate.require_head(bare_engine)
    with bare_engine.connect() as conn:
        assert dict(conn.execute(text("SELECT image_id, label FROM split_assignments")).all()) == {1: 1, 2: 1, 3: 1}


def test_synthetic_flag_migration_keeps_datasets_up_and_down(bare_engine):
    migrate.upgrade(bare_engine, "0009")
    with bare_engine.begin() as conn:
        conn.execute(text("INSERT INTO datasets (id, name, root, kind, created_at) VALUES "
                          "(1, 'mura-v1.1', '/data', 'mura', '2026-01-02 00:00:00'), "
                          "(2, 'wrists', '/w', 'folder', '2026-01-02 00:00:00')"))
    migrate.upgrade(bare_engine)
    with bare_engine.begin() as conn:
        assert conn.execute(text("SELECT id, synthetic FROM datasets ORDER BY id")).all() == [(1, 0), (2, 0)], \
            "rows made before the flag are not synthetic until an ingest says so"
        conn.execute(text("UPDATE datasets SET synthetic = 1 WHERE id = 1"))
    migrate.downgrade(bare_engine, "0009")
    with bare_engine.connect() as conn:
        assert "synthetic" not in {c["name"] for c in inspect(conn).get_columns("datasets")}
        assert conn.execute(text("SELECT name, kind FROM datasets ORDER BY id")).all() == [
            ("mura-v1.1", "mura"), ("wrists", "folder")]
    migrate.upgrade(bare_engine)
    migrate.require_head(bare_engine)
