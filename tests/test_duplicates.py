"""Duplicate groups: stored and read back, found by the near-duplicate hash, kept whole by splits."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from boneclf.data.ingest import ingest_mura
from boneclf.errors import BonedbError
from boneclf.store.duplicates import GroupPlan, get_duplicate_group, list_duplicate_groups, replace_groups
from boneclf.store.schema import Image


def test_groups_are_stored_replaced_and_read_back(engine, mura):
    ingest_mura(engine, mura)
    with engine.begin() as conn:
        ids = conn.execute(select(Image.id).order_by(Image.path).limit(5)).scalars().all()
        replace_groups(conn, 1, [GroupPlan("exact", [(ids[0], None), (ids[1], None)]),
                                 GroupPlan("near", [(ids[2], 0.0), (ids[3], 3.0), (ids[4], 5.0)])],
                       method={"exact": "sha256", "near": "dct64"}, threshold={"exact": 0, "near": 8})
    with engine.connect() as conn:
        groups = list_duplicate_groups(conn, "mura-v1.1")
        assert [(g.kind, g.size) for g in groups] == [("near", 3), ("exact", 2)]
        assert list_duplicate_groups(conn, limit=1, offset=1)[0].kind == "exact"
        near = get_duplicate_group(conn, groups[0].id)
        assert [m.image_id for m in near.members] == ids[2:5]
        assert [m.distance for m in near.members] == [0.0, 3.0, 5.0]
        assert near.members[0].part and near.members[0].source_split in ("train", "valid")
        assert near.to_dict()["crosses_source_splits"] == (len(near.source_splits) > 1)
    with engine.begin() as conn:  # computing again replaces the dataset's groups
        replace_groups(conn, 1, [GroupPlan("exact", [(ids[0], None), (ids[4], None)])],
                       method={"exact": "sha256"}, threshold={"exact": 0})
    with engine.connect() as conn:
        [only] = list_duplicate_groups(conn, "mura-v1.1")
        assert [m.image_id for m in get_duplicate_group(conn, only.id).members] == [ids[0], ids[4]]
        with pytest.raises(BonedbError, match="no duplicate group 999"):
            get_duplicate_group(conn, 999)
