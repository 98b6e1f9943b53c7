"""Folder datasets: labels from folder names, junk skipped, bad images reported, the source's split audited."""

from __future__ import annotations

import io
import random
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image as PILImage
from sqlalchemy import select

from boneclf.cli.main import cli
from boneclf.data.audit import audit_split
from boneclf.data.folder_dataset import ingest_folder, parse_label_map
from boneclf.data.radiograph import draw_radiograph
from boneclf.data.splits import list_splits, split_summary
from boneclf.errors import BonedbError, InputProblems
from boneclf.store.provenance import list_ingests

from conftest import ingest_outcomes, snapshot


def picture(path: Path, seed: int, abnormal: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image, _ = draw_radiograph("hand", abnormal, 72, 96, random.Random(seed))
    image.save(path)


@pytest.fixture
def kaggle_tree(tmp_path) -> Path:
    """train/val/test x fractured/not fractured, with junk, a truncated file and planted duplicates."""
    root = tmp_path / "kaggle"
    seed = 0
    for subset, n in (("train", 12), ("val", 4), ("test", 4)):
        for label_dir, abnormal in (("fractured", True), ("not fractured", False)):
            for i in range(n):
                seed += 1
                picture(root / subset / label_dir / f"p{seed:03d}_{i}.png", seed, abnormal)
    (root / "train" / "fractured" / "desktop.ini").write_text("[.ShellClassInfo]")
    (root / "val" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (root / "test" / "fractured" / "empty.png").write_bytes(b"")
    (root / "train" / "fractured" / "notes.txt").write_text("scanned 2019")
    truncated = root / "train" / "not fractured" / "broken.png"
    truncated.write_bytes((root / "train" / "fractured" / "p001_0.png").read_bytes()[:120])
    # The same image in train and test, and a resized re-encoded copy in val.
    shutil.copyfile(root / "train" / "fractured" / "p001_0.png", root / "test" / "fractured" / "copy.png")
    with PILImage.open(root / "train" / "fractured" / "p002_1.png") as original:
        small = original.resize((60, 80))
    buffer = io.BytesIO()
    small.convert("RGB").save(buffer, "JPEG", quality=90)
    PILImage.open(buffer).save(root / "val" / "fractured" / "resized.jpg")
    return root


def test_import_with_subsets_junk_and_bad_files(engine, kaggle_tree):
    report = ingest_folder(engine, kaggle_tree, dataset="kaggle", part="hand")
    assert report.images == 12 * 2 + 4 * 2 + 4 * 2 + 2  # + copy.png + resized.jpg
    assert report.skipped == {"system file": 2, "empty file": 1, "not an image file": 1}
    assert len(report.bad_images) == 1 and "broken.png" in report.bad_images[0]
    # Every file left out is counted by reason, the one named in bad_images too.
    assert report.left_out == {"empty file": 1, "not an image file": 1, "system file": 2, "unreadable image": 1}
    assert report.to_dict()["left_out"] == report.left_out
    assert report.per_subset_label["train/1"] == 12 and report.per_subset_label["train/0"] == 12
    assert report.patients == report.images  # no pattern: one patient per image
    assert [s.name for s in list_splits(engine)] == ["kaggle"]
    summary = split_summary(engine, "kaggle")
    assert summary.kind == "source"
    assert {row.subset for row in summary.counts} == {"train", "val", "test"}
    assert {row.part for row in summary.counts} == {"hand"}


def test_audit_shows_the_sources_duplicates(engine, kaggle_tree):
    ingest_folder(engine, kaggle_tree, dataset="kaggle")
    report = audit_split(engine, "kaggle")
    assert report.leaks
    assert [sorted(d["paths"]) for d in report.exact_duplicates] == [
        ["test: test/fractured/copy.png", "train: train/fractured/p001_0.png"]]
    assert any({"train: train/fractured/p002_1.png", "val: val/fractured/resized.jpg"} <= set(d["paths"])
               for d in report.duplicate_groups), report.duplicate_groups


def test_patient_pattern_groups_files(engine, tmp_path):
    root = tmp_path / "flat"
    for i in range(6):
        picture(root / ("abnormal" if i % 2 else "normal") / f"patient{i // 3}_view{i}.png", i, bool(i % 2))
    report = ingest_folder(engine, root, dataset="flat", patient_pattern=r"patient(?P<patient>\d+)_")
    assert report.patients == 2 and report.images == 6
    assert report.source_split is None  # no subset folders, no source split


def test_reingest_is_a_noop_and_a_changed_tree_is_refused(engine, kaggle_tree):
    first = ingest_folder(engine, kaggle_tree, dataset="kaggle")
    before = snapshot(engine)
    assert ingest_folder(engine, kaggle_tree, dataset="kaggle").unchanged
    assert snapshot(engine) == before, "a no-op leaves no trace, not even in the log"
    picture(kaggle_tree / "train" / "fractured" / "new.png", 999, True)
    with pytest.raises(BonedbError, match="new --dataset name"):
        ingest_folder(engine, kaggle_tree, dataset="kaggle")
    assert snapshot(engine, log=False) == {k: v for k, v in before.items() if k != "ingest_log"}
    applied, refused = list_ingests(engine)
    assert (applied.id, applied.command, applied.outcome) == (first.ingest_id, "ingest-folder", "applied")
    assert applied.images_added == first.images and applied.options["part"] is None
    assert len(applied.source_sha256["listing"]) == 64 and refused.source_sha256 != applied.source_sha256
    assert (refused.outcome, refused.images_added) == ("refused", 1) and "new --dataset name" in refused.message
    assert split_summary(engine, "kaggle").label_version == first.ingest_id


def test_a_steward_relabel_stands_against_a_reingest_of_the_unchanged_folder(engine, kaggle_tree):
    """Before: the relabelled study made the unchanged folder "a different version", refused."""
    from boneclf.data.label_decisions import set_label
    from boneclf.store.schema import Patient, Study

    ingest_folder(engine, kaggle_tree, dataset="kaggle")
    with engine.connect() as conn:
        patient, part, number, label = conn.execute(
            select(Patient.patient_key, Study.body_part, Study.study_number, Study.label)
            .join(Patient, Patient.id == Study.patient_id).order_by(Study.id)).first()
    set_label(engine, "kaggle", patient, part, number, 1 - label, note="the pictures show otherwise")
    before = snapshot(engine)
    result = CliRunner().invoke(cli, ["--database-url", engine.url.render_as_string(hide_password=False),
                                      "ingest-folder", str(kaggle_tree), "--dataset", "kaggle"])
    assert result.exit_code == 0, result.output
    [conflict] = [line for line in result.stderr.splitlines() if line.startswith("review conflict:")]
    assert f"the folder says {label}" in conflict and f"decided {1 - label}" in conflict and "labels set" in conflict
    assert snapshot(engine) == before, "the decision stands: nothing changed, nothing logged"


def test_a_folder_of_empty_files_is_refused_in_words(engine, tmp_path):
    for name in ("a.png", "b.png"):
        (tmp_path / "empties" / "fractured").mkdir(parents=True, exist_ok=True)
        (tmp_path / "empties" / "fractured" / name).write_bytes(b"")
    with pytest.raises(BonedbError) as refused:
        ingest_folder(engine, tmp_path / "empties", dataset="empties")
    assert str(refused.value).endswith("no readable images under label folders (skipped: 2 empty files)")
    assert list_ingests(engine)[-1].message == str(refused.value), "the log keeps the same words"


def test_unknown_label_folder_is_named_with_remedy(engine, kaggle_tree):
    (kaggle_tree / "train" / "maybe").mkdir()
    before = snapshot(engine, log=False)
    with pytest.raises(InputProblems) as caught:
        ingest_folder(engine, kaggle_tree, dataset="kaggle")
    assert "--label-map 'maybe=1'" in str(caught.value.problems[0])
    assert snapshot(engine, log=False) == before and ingest_outcomes(engine)[-1] == "refused"
    report = ingest_folder(engine, kaggle_tree, dataset="kaggle", label_map=parse_label_map("maybe=1"))
    assert report.images > 0


def test_label_map_syntax():
    assert parse_label_map("Broken_Bone=1, ok=0")["broken bone"] == 1
    with pytest.raises(BonedbError, match="FOLDER=0 or FOLDER=1"):
        parse_label_map("broken")


def test_cli(tmp_path, kaggle_tree):
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    runner = CliRunner()
    assert runner.invoke(cli, ["--database-url", url, "db", "upgrade"]).exit_code == 0
    result = runner.invoke(cli, ["--database-url", url, "ingest-folder", str(kaggle_tree), "--dataset", "k"])
    assert result.exit_code == 0, result.output
    assert "skipped: 1 empty file, 1 non-image file, 2 system files, 1 unreadable image\n" in result.stdout, \
        "the summary counts the unreadable file that stderr names"
    result = runner.invoke(cli, ["--database-url", url, "audit", "split", "k"])
    assert result.exit_code == 1 and "LEAKS FOUND" in result.output
