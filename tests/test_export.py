"""Exports: layouts, traceable names, manifests, byte-identical repeats, atomicity, refusals, TFRecords."""

from __future__ import annotations

import csv
import hashlib
import json
import os
from pathlib import Path

import pytest

from boneclf.data import export as export_module
from boneclf.data.export import export_split
from boneclf.data.ingest import ingest_mura
from boneclf.data.splits import SplitOptions, create_split
from boneclf.errors import BonedbError
from boneclf.vocabulary import BODY_PARTS


@pytest.fixture
def split_db(engine, mura):
    ingest_mura(engine, mura)
    create_split(engine, "s", SplitOptions("mura-v1.1", BODY_PARTS, test_from="carve", val=0.2, test=0.2))
    return engine


def tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def manifest(out: Path) -> list[dict]:
    with open(out / "manifest.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_fracture_layout_per_part_and_traceable_names(split_db, mura, tmp_path):
    out = tmp_path / "ex"
    report = export_split(split_db, "s", out, stage="fracture")
    rows = manifest(out)
    assert len(rows) == report.images == sum(report.per_subset.values())
    for row in rows:
        part, subset, cls, filename = row["exported_path"].split("/")
        assert (part, subset) == (row["part"], row["subset"])
        assert cls == ("fractured" if row["label"] == "1" else "normal")
        assert filename == f"{part}_patient{row['patient']}_study{row['study']}_" + row["source_path"].rsplit("/", 1)[1]
        assert (out / row["exported_path"]).stat().st_ino == (mura / row["source_path"]).stat().st_ino  # hard link
    marker = json.loads((out / "split.json").read_text())
    assert marker["split"] == "s" and marker["stage"] == "fracture" and len(marker["content_hash"]) == 64


def test_bodypart_and_combined_layouts(split_db, tmp_path):
    export_split(split_db, "s", tmp_path / "a", stage="bodypart")
    assert {r["exported_path"].split("/")[1] for r in manifest(tmp_path / "a")} <= set(BODY_PARTS)
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["manifest.csv", "split.json", "test", "train", "val"]
    export_split(split_db, "s", tmp_path / "b", stage="fracture", combined=True, parts=("shoulder", "wrist"))
    rows = manifest(tmp_path / "b")
    assert {r["part"] for r in rows} == {"shoulder", "wrist"}
    assert {tuple(r["exported_path"].split("/")[:2]) for r in rows} <= {
        (s, c) for s in ("train", "val", "test") for c in ("fractured", "normal")}


def test_same_split_same_bytes(split_db, tmp_path):
    export_split(split_db, "s", tmp_path / "one", link="copy")
    export_split(split_db, "s", tmp_path / "two", link="copy")
    export_split(split_db, "s", tmp_path / "three", link="hardlink")
    assert tree(tmp_path / "one") == tree(tmp_path / "two")
    linked = tree(tmp_path / "three")
    assert json.loads((tmp_path / "three" / "split.json").read_text())["link"] == "hardlink"
    assert {k: v for k, v in linked.items() if k != "split.json"} == {
        k: v for k, v in tree(tmp_path / "one").items() if k != "split.json"}
    export_split(split_db, "s", tmp_path / "links", link="symlink")
    some = manifest(tmp_path / "links")[0]["exported_path"]
    assert (tmp_path / "links" / some).is_symlink()


def test_interrupted_export_leaves_nothing_at_out(split_db, tmp_path, monkeypatch):
    calls = {"n": 0}
    real = export_module._place

    def failing(source, target, link):
        calls["n"] += 1
        if calls["n"] == 7:
            raise OSError(28, "No space left on device")
        return real(source, target, link)

    monkeypatch.setattr(export_module, "_place", failing)
    exports = tmp_path / "exports"
    exports.mkdir()
    with pytest.raises(OSError):
        export_split(split_db, "s", exports / "ex")
    assert os.listdir(exports) == [], "no OUT and no partial sibling"

    # With a previous export at OUT, a failed --force keeps the previous one intact.
    monkeypatch.setattr(export_module, "_place", real)
    export_split(split_db, "s", exports / "ex")
    before = tree(exports / "ex")
    calls["n"] = 0
    monkeypatch.setattr(export_module, "_place", failing)
    with pytest.raises(OSError):
        export_split(split_db, "s", exports / "ex", stage="bodypart", force=True)
    assert tree(exports / "ex") == before
    assert os.listdir(exports) == ["ex"]


def test_refuses_foreign_folders_and_needs_force_for_old_exports(split_db, tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    with pytest.raises(BonedbError, match="not empty and not a bonedb export"):
        export_split(split_db, "s", foreign, force=True)
    assert (foreign / "thesis.tex").read_text() == "precious"

    empty = tmp_path / "empty"
    empty.mkdir()
    export_split(split_db, "s", empty)  # an empty folder is fine
    with pytest.raises(BonedbError, match="pass --force"):
        export_split(split_db, "s", empty, stage="bodypart")
    report = export_split(split_db, "s", empty, stage="bodypart", force=True)
    assert report.replaced_previous
    assert json.loads((empty / "split.json").read_text())["stage"] == "bodypart"


def test_missing_source_file_aborts_cleanly(split_db, mura, tmp_path):
    first = sorted(mura.rglob("*.png"))[0]
    first.unlink()
    with pytest.raises(BonedbError, match="missing"):
        export_split(split_db, "s", tmp_path / "ex")
    assert not (tmp_path / "ex").exists()


def test_unknown_split_and_part(split_db, tmp_path):
    with pytest.raises(BonedbError, match="no split named 'nope'"):
        export_split(split_db, "nope", tmp_path / "ex")
    create_split(split_db, "shoulders", SplitOptions("mura-v1.1", ("shoulder",), test_from="carve"))
    with pytest.raises(BonedbError, match="split 'shoulders' has no images of wrist \\(it has shoulder\\)"):
        export_split(split_db, "shoulders", tmp_path / "ex", parts=("wrist",))
    assert not (tmp_path / "ex").exists()


def test_tfrecord_shards_hold_every_image(split_db, tmp_path, monkeypatch):
    from boneclf.ml import tfrecords
    from boneclf.ml.tf_env import tensorflow
    from boneclf.ml.tfrecords import parse_example

    tf = tensorflow()
    monkeypatch.setattr(tfrecords, "SHARD_SIZE", 16)
    report = tfrecords.export_shards(split_db, "s", tmp_path / "tf")
    shards = sorted((tmp_path / "tf" / "train").glob("*.tfrecord"))
    assert len(shards) == -(-report.per_subset["train"] // 16)
    records = [parse_example(r) for r in tf.data.TFRecordDataset([str(s) for s in shards])]
    assert len(records) == report.per_subset["train"]
    first = records[0]
    assert tf.io.decode_png(first["image"]).shape[0] == 48
    assert int(first["label"]) == int(first["abnormal"]) in (0, 1)


def test_tfrecord_export_is_the_same_bytes_in_another_process(split_db, tmp_path):
    """Issue 9, defect 5: the README promises identical bytes. A record's feature map is serialised in a
    per-process hash order unless asked for a deterministic one, so compare with another process."""
    import shutil
    import subprocess
    import sys

    from boneclf.ml.tfrecords import export_shards

    export_shards(split_db, "s", tmp_path / "here")
    bonedb = shutil.which("bonedb", path=str(Path(sys.executable).parent))
    url = split_db.url.render_as_string(hide_password=False)
    subprocess.run([bonedb, "--database-url", url, "export", "s", str(tmp_path / "there"), "--format", "tfrecord"],
                   check=True, capture_output=True, timeout=600)
    here, there = tree(tmp_path / "here"), tree(tmp_path / "there")
    assert any(name.endswith(".tfrecord") for name in here)
    assert here == there
