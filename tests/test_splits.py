"""Splits: patient-disjoint across parts, stratified, reproducible across backends, immutable."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest
from sqlalchemy import select

from boneclf.data.ingest import ingest_mura
from boneclf.data.splits import (
    SplitOptions,
    create_split,
    dataset_id_of,
    delete_split,
    list_splits,
    load_records,
    split_summary,
    store_assignment,
)
from boneclf.data.synth import synth_mura
from boneclf.errors import BonedbError
from boneclf.store import migrate
from boneclf.store.engine import make_engine
from boneclf.store.schema import Image, Patient, SplitAssignment, SplitVersion, Study
from boneclf.vocabulary import BODY_PARTS

from conftest import snapshot


@pytest.fixture(scope="session")
def manifest_only(tmp_path_factory) -> Path:
    """A larger synthetic MURA, CSVs only: splits need rows, not pixels."""
    out = tmp_path_factory.mktemp("manifest") / "data"
    synth_mura(out, patients=600, seed=11, write_images=False)
    return out


def assignments(engine, name: str) -> list[tuple]:
    """(patient, part, study id, label, source split, subset) for every image of split NAME."""
    with engine.connect() as conn:
        return conn.execute(
            select(Patient.patient_key, Study.body_part, Study.id, Study.label, Study.source_split,
                   SplitAssignment.subset)
            .join(Image, Image.id == SplitAssignment.image_id)
            .join(Study, Study.id == Image.study_id)
            .join(Patient, Patient.id == Study.patient_id)
            .join(SplitVersion, SplitVersion.id == SplitAssignment.split_id)
            .where(SplitVersion.name == name)
        ).all()


def options(**kw) -> SplitOptions:
    return SplitOptions(**{"dataset": "mura-v1.1", "parts": BODY_PARTS, **kw})


def test_patients_never_cross_subsets_even_across_parts(engine, manifest_only):
    ingest_mura(engine, manifest_only)
    create_split(engine, "s", options(test_from="carve", val=0.2, test=0.2))
    subsets_of, parts_of = defaultdict(set), defaultdict(set)
    for patient, part, _study, _label, _source, subset in assignments(engine, "s"):
        subsets_of[patient].add(subset)
        parts_of[patient].add(part)
    assert sum(len(p) > 1 for p in parts_of.values()) > 30, "the data has multi-part patients"
    assert all(len(s) == 1 for s in subsets_of.values())
    assert {s for (s,) in subsets_of.values()} == {"train", "val", "test"}


def test_stratified_within_tolerance(engine, manifest_only):
    ingest_mura(engine, manifest_only)
    create_split(engine, "s", options(test_from="carve", val=0.2, test=0.2))
    per_stratum = defaultdict(lambda: defaultdict(int))
    for _p, part, _s, label, _src, subset in assignments(engine, "s"):
        per_stratum[(part, label)][subset] += 1
    checked = 0
    for stratum, counts in per_stratum.items():
        total = sum(counts.values())
        if total < 100:
            continue
        checked += 1
        for subset, share in (("train", 0.6), ("val", 0.2), ("test", 0.2)):
            assert abs(counts[subset] / total - share) < 0.05, (stratum, dict(counts))
    assert checked >= 6


def test_official_test_is_muras_valid_split(engine, manifest_only):
    ingest_mura(engine, manifest_only)
    create_split(engine, "s", options(val=0.1))
    rows = assignments(engine, "s")
    assert all((source == "valid") == (subset == "test") for *_, source, subset in rows)
    val = sum(1 for *_, source, subset in rows if subset == "val")
    train_pool = sum(1 for *_, source, _ in rows if source == "train")
    assert abs(val / train_pool - 0.1) < 0.02


def test_official_test_needs_held_out_images(engine, manifest_only):
    ingest_mura(engine, manifest_only, splits=("train",))
    with pytest.raises(BonedbError, match="--test-from carve"):
        create_split(engine, "s", options())


def test_same_split_on_sqlite_and_mysql(mysql_server_url, manifest_only, tmp_path, request):
    hashes = []
    for url in (f"sqlite:///{tmp_path / 'a.sqlite'}", request.getfixturevalue("db_url_mysql")):
        engine = make_engine(url, create=True)
        migrate.upgrade(engine)
        ingest_mura(engine, manifest_only)
        hashes.append(create_split(engine, "s", options(test_from="carve", seed=5)).content_hash)
        engine.dispose()
    assert hashes[0] == hashes[1]


def test_seed_changes_the_split_and_repeats_exactly(engine, manifest_only):
    ingest_mura(engine, manifest_only)
    a = create_split(engine, "a", options(seed=1))
    b = create_split(engine, "b", options(seed=2))
    c = create_split(engine, "c", options(seed=1))
    assert a.content_hash == c.content_hash != b.content_hash


def test_immutable_and_idempotent(engine, manifest_only):
    ingest_mura(engine, manifest_only, parts=("hand", "wrist"))
    first = create_split(engine, "s", options(parts=("hand", "wrist")))
    stored = sorted(assignments(engine, "s"))
    again = create_split(engine, "s", options(parts=("hand", "wrist")))
    assert not again.created and again.note is None and again.content_hash == first.content_hash
    with pytest.raises(BonedbError, match=r"already exists with other options \(seed 42 there, 7 here\); splits"):
        create_split(engine, "s", options(parts=("hand", "wrist"), seed=7))
    ingest_mura(engine, manifest_only)  # more data arrives
    later = create_split(engine, "s", options(parts=("hand", "wrist")))
    assert later.content_hash == first.content_hash
    assert sorted(assignments(engine, "s")) == stored
    # Making another split changes nothing in this one.
    create_split(engine, "t", options(parts=("hand", "wrist"), seed=9))
    assert sorted(assignments(engine, "s")) == stored


def test_a_leaking_assignment_is_refused_and_nothing_stored(engine, manifest_only):
    ingest_mura(engine, manifest_only, parts=("shoulder",))
    before = snapshot(engine)
    with engine.begin() as conn:
        records = load_records(conn, dataset_id_of(conn, "mura-v1.1"), ("shoulder",))
    # Alternate images between train and test: patients with several images straddle both.
    leaking = {r.image_id: ("train", "test")[i % 2] for i, r in enumerate(records)}
    with pytest.raises(BonedbError, match="would leak"):
        with engine.begin() as conn:
            store_assignment(conn, "bad", dataset_id_of(conn, "mura-v1.1"), "bonedb", {}, 0, records, leaking)
    assert snapshot(engine) == before


def test_show_list_delete(engine, manifest_only):
    ingest_mura(engine, manifest_only, parts=("humerus", "shoulder"))
    create_split(engine, "hs", options(parts=("humerus", "shoulder")))
    summary = split_summary(engine, "hs")
    assert {row.subset for row in summary.counts} == {"train", "val", "test"}
    assert {row.part for row in summary.counts} == {"humerus", "shoulder"}
    assert [row.name for row in list_splits(engine)] == ["hs"]
    delete_split(engine, "hs")
    assert list_splits(engine) == []
    with pytest.raises(BonedbError, match="no split named 'hs'"):
        split_summary(engine, "hs")
