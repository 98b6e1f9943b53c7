"""Ingest on SQLite and MySQL: counts, idempotence, relabels, atomicity, --verify, filters."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from sqlalchemy import func, select

from boneclf.data.ingest import ingest_mura
from boneclf.data.synth import plan_dataset
from boneclf.errors import BonedbError, InputProblems
from boneclf.store.schema import Image, Study

from conftest import ingest_outcomes, snapshot


def csv_lines(path: Path) -> list[str]:
    """The CSV's records (read_text would turn the real files' CRLF into LF behind our back)."""
    return path.read_bytes().decode().splitlines()


def synth_counts(mura: Path) -> tuple[int, int, int]:
    folder = mura / "MURA-v1.1"
    lines = [l for s in ("train", "valid") for l in csv_lines(folder / f"{s}_image_paths.csv")]
    studies = {l.rsplit("/", 1)[0] for l in lines}
    patients = {l.split("/")[3] for l in lines}
    return len(lines), len(studies), len(patients)


def test_ingest_counts_match_the_csvs(engine, mura):
    report = ingest_mura(engine, mura)
    images, studies, patients = synth_counts(mura)
    assert (report.images_added, report.studies_added, report.patients_added) == (images, studies, patients)
    assert [tuple(t) for t in report.stats.totals] == [("mura-v1.1", images, studies, patients)]
    assert sum(row.images for row in report.stats.counts) == images
    assert report.changed


def test_second_run_changes_nothing(engine, mura):
    ingest_mura(engine, mura, verify=True)
    before = snapshot(engine)
    report = ingest_mura(engine, mura, verify=True)
    assert not report.changed
    assert report.images_unchanged == synth_counts(mura)[0]
    assert snapshot(engine) == before
    # A run without --verify keeps what --verify measured.
    assert not ingest_mura(engine, mura).changed
    assert snapshot(engine) == before


def test_verify_records_file_facts(engine, mura):
    ingest_mura(engine, mura, verify=True)
    with engine.connect() as conn:
        rows = conn.execute(select(Image.path, Image.file_size, Image.width, Image.height, Image.content_hash)).all()
    for path, size, width, height, digest in rows:
        assert size == os.path.getsize(mura / path)
        assert height == 48 and 16 <= width <= 48
        assert len(digest) == 64


def test_verify_reports_missing_and_truncated_files_and_writes_nothing(engine, mura):
    lines = csv_lines(mura / "MURA-v1.1" / "train_image_paths.csv")
    (mura / lines[0]).unlink()
    truncated = mura / lines[3]
    truncated.write_bytes(truncated.read_bytes()[:100])
    before = snapshot(engine, log=False)
    with pytest.raises(InputProblems) as caught:
        ingest_mura(engine, mura, verify=True)
    text = [str(p) for p in caught.value.problems]
    assert len(text) == 2
    assert text[0].startswith("MURA-v1.1/train_image_paths.csv:1: missing file")
    assert text[1].startswith("MURA-v1.1/train_image_paths.csv:4: cannot decode")
    assert snapshot(engine, log=False) == before and ingest_outcomes(engine)[-1] == "refused"
    # The steward may leave them out instead, and is told which.
    report = ingest_mura(engine, mura, verify=True, skip_bad=True)
    assert len(report.skipped) == 2
    assert report.images_added == synth_counts(mura)[0] - 2
    # The truncated file is still on disk: left out on purpose, with its reason, not an unknown file.
    from boneclf.data.audit import audit_dataset

    audit = audit_dataset(engine, "mura-v1.1", quick=True)
    assert audit.unexpected == [] and len(audit.left_out) == 1
    assert audit.left_out[0].startswith(f"{lines[3]}: cannot decode: "), "the path once, then why"


def test_bad_input_lists_every_problem_and_writes_nothing(engine, mura):
    ingest_mura(engine, mura)
    before = snapshot(engine, log=False)
    folder = mura / "MURA-v1.1"
    paths = folder / "train_image_paths.csv"
    good = csv_lines(paths)
    paths.write_bytes(("\r\n".join([good[0], "/etc/passwd", "MURA-v1.1/train/XR_KNEE/patient00001/study1_positive/image1.png", good[0]] + good[1:])).encode())
    with pytest.raises(InputProblems) as caught:
        ingest_mura(engine, mura)
    found = [str(p) for p in caught.value.problems]
    assert [f.split(": ")[0] for f in found] == [
        "MURA-v1.1/train_image_paths.csv:2",
        "MURA-v1.1/train_image_paths.csv:3",
        "MURA-v1.1/train_image_paths.csv:4",
    ]
    assert "nothing was written" in str(caught.value)
    assert snapshot(engine, log=False) == before and ingest_outcomes(engine)[-1] == "refused"


def test_failure_during_write_rolls_back(engine, mura):
    """An error after some rows are written (here: a study that moved split) leaves no trace."""
    ingest_mura(engine, mura, splits=("train",))
    before = snapshot(engine, log=False)
    folder = mura / "MURA-v1.1"
    # Copy one train patient's first study into valid: same identity, other split.
    train_line = csv_lines(folder / "train_image_paths.csv")[0]
    moved = train_line.replace("/train/", "/valid/")
    label_line = next(l for l in (folder / "train_labeled_studies.csv").read_text().split("\n")
                      if train_line.startswith(l.split(",")[0]))
    with open(folder / "valid_image_paths.csv", "a", newline="") as fh:
        fh.write(moved + "\r\n")
    with open(folder / "valid_labeled_studies.csv", "a", newline="") as fh:
        fh.write(label_line.replace("/train/", "/valid/") + "\n")
    with pytest.raises(BonedbError, match="never moves a study between splits"):
        ingest_mura(engine, mura)  # new valid patients are inserted before the moved study is met
    assert snapshot(engine, log=False) == before and ingest_outcomes(engine)[-1] == "refused"


def test_folder_rename_relabels_and_moves_paths(engine, mura):
    ingest_mura(engine, mura)
    before_images = snapshot(engine)["images"]
    folder = mura / "MURA-v1.1"
    labels = (folder / "train_labeled_studies.csv").read_text().split("\n")
    study_path, _ = labels[0].split(",")
    old_dir = study_path.rstrip("/")
    new_dir = old_dir.replace("_negative", "_positive") if "_negative" in old_dir else old_dir.replace("_positive", "_negative")
    new_label = 1 if new_dir.endswith("_positive") else 0
    (mura / old_dir).rename(mura / new_dir)
    labels[0] = f"{new_dir}/,{new_label}"
    (folder / "train_labeled_studies.csv").write_text("\n".join(labels))
    paths = folder / "train_image_paths.csv"
    paths.write_bytes(paths.read_bytes().replace(old_dir.encode() + b"/", new_dir.encode() + b"/"))

    report = ingest_mura(engine, mura, verify=True)
    assert report.images_added == report.studies_added == report.patients_added == 0
    assert [(r.old_label, r.new_label) for r in report.relabeled] == [(1 - new_label, new_label)]
    assert report.images_moved == sum(1 for l in csv_lines(paths) if l.startswith(new_dir + "/"))
    assert len(snapshot(engine)["images"]) == len(before_images)
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).where(Image.path.like(f"{old_dir}/%"))).scalar() == 0


def test_labels_csv_only_relabel(engine, mura):
    ingest_mura(engine, mura)
    labels_file = mura / "MURA-v1.1" / "valid_labeled_studies.csv"
    labels = labels_file.read_text().split("\n")
    flipped = [f"{l[:-1]}{1 - int(l[-1])}" if l else l for l in labels[:2]]
    labels_file.write_text("\n".join(flipped + labels[2:]))
    before = snapshot(engine, log=False)
    with pytest.raises(InputProblems) as caught:
        ingest_mura(engine, mura)
    assert [p.line for p in caught.value.problems] == [1, 2]
    assert all("--labels-from" in p.message for p in caught.value.problems)
    assert snapshot(engine, log=False) == before and ingest_outcomes(engine)[-1] == "refused"

    report = ingest_mura(engine, mura, labels_from="csv")
    assert len(report.relabeled) == 2 and len(report.conflicts_settled) == 2
    assert not ingest_mura(engine, mura, labels_from="csv").changed
    # Going back to the folder names restores the original labels.
    assert len(ingest_mura(engine, mura, labels_from="folder").relabeled) == 2


def test_parts_and_split_filters(engine, mura):
    report = ingest_mura(engine, mura, parts=("shoulder", "wrist"), splits=("train",))
    expected = [i for i in plan_dataset(40, seed=7) if i.part in ("shoulder", "wrist") and i.split == "train"]
    assert report.images_added == len(expected)
    with engine.connect() as conn:
        parts = set(conn.execute(select(Study.body_part).distinct()).scalars())
        splits = set(conn.execute(select(Study.source_split).distinct()).scalars())
    assert parts == {"shoulder", "wrist"} and splits == {"train"}
    # The rest arrives later without disturbing what is there.
    report = ingest_mura(engine, mura)
    assert report.images_unchanged == len(expected)


def test_a_database_without_schema_is_refused_when_opened(db_url):
    from boneclf.store import open_database

    # The schema is checked once, when a command opens the database, not in every library call.
    with pytest.raises(BonedbError, match="bonedb db upgrade"):
        open_database(db_url)


def _prepend(path: Path, line: str, ending: str) -> None:
    path.write_bytes((line + ending).encode() + path.read_bytes())


def _flip_first_label(path: Path) -> None:
    lines = csv_lines(path)
    study, label = lines[0].split(",")
    lines[0] = f"{study},{1 - int(label)}"
    path.write_bytes("".join(f"{line}\n" for line in lines).encode())


BAD_INPUTS = {
    "missing csv": (lambda f: (f / "valid_image_paths.csv").unlink(), "valid_image_paths.csv: missing"),
    "malformed line": (lambda f: _prepend(f / "train_image_paths.csv", "MURA-v1.1/train/XR_HAND/p1/s1/i1.png", "\r\n"),
                       "train_image_paths.csv:1: malformed image path"),
    "header row": (lambda f: _prepend(f / "train_labeled_studies.csv", "path,label", "\n"),
                   "train_labeled_studies.csv:1: looks like a header row"),
    "absolute path": (lambda f: _prepend(f / "train_image_paths.csv", "/data/MURA-v1.1/x.png", "\r\n"),
                      "train_image_paths.csv:1: absolute path"),
    "escapes root": (lambda f: _prepend(f / "train_image_paths.csv", "MURA-v1.1/../secret.png", "\r\n"),
                     "train_image_paths.csv:1: path 'MURA-v1.1/../secret.png' escapes the dataset root"),
    "unknown part": (lambda f: _prepend(f / "train_image_paths.csv",
                                        "MURA-v1.1/train/XR_KNEE/patient00001/study1_positive/image1.png", "\r\n"),
                     "train_image_paths.csv:1: unknown body part XR_KNEE"),
    "study without label": (lambda f: _prepend(f / "train_image_paths.csv",
                                               "MURA-v1.1/train/XR_HAND/patient00001/study9_positive/image1.png", "\r\n"),
                            "train_image_paths.csv:1: patient00001 hand study9 (train) has 1 image(s) but no label"),
    "label conflict": (lambda f: _flip_first_label(f / "train_labeled_studies.csv"),
                       "train_labeled_studies.csv:1: "),
    "duplicate line": (lambda f: _prepend(f / "train_image_paths.csv", csv_lines(f / "train_image_paths.csv")[0], "\r\n"),
                       "train_image_paths.csv:2: duplicate"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_each_bad_input_is_named_and_changes_nothing(engine, mura, case):
    ingest_mura(engine, mura, splits=("valid",))
    before = snapshot(engine, log=False)
    damage, expected = BAD_INPUTS[case]
    damage(mura / "MURA-v1.1")
    with pytest.raises(InputProblems) as caught:
        ingest_mura(engine, mura)
    found = [str(p) for p in caught.value.problems]
    assert len(found) == 1, found
    assert found[0].startswith("MURA-v1.1/") and expected in found[0], found[0]
    assert snapshot(engine, log=False) == before and ingest_outcomes(engine)[-1] == "refused"
