"""The CSVs as they really are, and one clear message, with file and line, per bad row."""

from __future__ import annotations

from pathlib import Path

import pytest

from boneclf.data.labels import resolve_labels
from boneclf.data.mura_reader import locate, read_manifest
from boneclf.errors import BonedbError

P = "MURA-v1.1/train/XR_HUMERUS/patient00001/study1_positive"
Q = "MURA-v1.1/train/XR_SHOULDER/patient00001/study1_negative"


def write_mura(root: Path, images: list[str], labels: list[str], valid_images=(), valid_labels=()) -> Path:
    folder = root / "MURA-v1.1"
    folder.mkdir(parents=True)
    (folder / "train_image_paths.csv").write_bytes("".join(f"{l}\r\n" for l in images).encode())
    (folder / "train_labeled_studies.csv").write_bytes("".join(f"{l}\n" for l in labels).encode())
    (folder / "valid_image_paths.csv").write_bytes("".join(f"{l}\r\n" for l in valid_images).encode())
    (folder / "valid_labeled_studies.csv").write_bytes("".join(f"{l}\n" for l in valid_labels).encode())
    return root


def messages(manifest, labels=None) -> list[str]:
    problems = manifest.problems + (labels.problems if labels else [])
    return [str(p) for p in problems]


def test_first_record_is_kept_and_crlf_stripped(tmp_path):
    root = write_mura(tmp_path, [f"{P}/image1.png", f"{P}/image2.png", f"{Q}/image1.png"], [f"{P}/,1", f"{Q}/,0"])
    manifest = read_manifest(root)
    assert manifest.problems == []
    assert [i.path for i in manifest.images] == [f"{P}/image1.png", f"{P}/image2.png", f"{Q}/image1.png"]
    first = manifest.images[0]
    assert (first.study.patient, first.study.part, first.study.number, first.image_number) == ("00001", "humerus", 1, 1)
    assert len(manifest.labels) == 2, "a header=0 reader would have dropped the first label"
    labels = resolve_labels(manifest)
    assert labels.problems == [] and sorted(labels.labels.values()) == [0, 1]


def test_root_may_be_the_mura_folder_itself(tmp_path):
    root = write_mura(tmp_path, [f"{P}/image1.png"], [f"{P}/,1"])
    assert locate(root) == locate(root / "MURA-v1.1")
    assert locate(root)[0] == root.resolve()


def test_not_a_mura_folder(tmp_path):
    with pytest.raises(BonedbError, match="neither MURA-v1.1/ nor train_image_paths.csv"):
        locate(tmp_path)
    with pytest.raises(BonedbError, match="no such folder"):
        locate(tmp_path / "nope")


def test_missing_csv_named_with_remedy(tmp_path):
    root = write_mura(tmp_path, [f"{P}/image1.png"], [f"{P}/,1"])
    (root / "MURA-v1.1" / "valid_labeled_studies.csv").unlink()
    assert messages(read_manifest(root)) == [
        "MURA-v1.1/valid_labeled_studies.csv: missing: MURA ships valid_labeled_studies.csv beside the others; "
        "restore it, or leave out this split with --split train"
    ]
    assert read_manifest(root, splits=("train",)).problems == []


@pytest.mark.parametrize(
    "line, expected",
    [
        ("/abs/MURA-v1.1/train/XR_HUMERUS/patient00001/study1_positive/image1.png", "absolute path"),
        ("MURA-v1.1/train/../../etc/passwd.png", "escapes the dataset root"),
        ("MURA-v1.1/train/XR_KNEE/patient00001/study1_positive/image1.png", "unknown body part XR_KNEE"),
        ("MURA-v1.1/train/XR_HUMERUS/patient1/study1_positive/image1.png", "is not 5 digits"),
        ("MURA-v1.1/train/XR_HUMERUS/patient00001/study1_maybe/image1.png", "malformed image path"),
        ("MURA-v1.1/valid/XR_HUMERUS/patient00001/study1_positive/image1.png", "move the line to valid_*.csv"),
        ("OTHER/train/XR_HUMERUS/patient00001/study1_positive/image1.png", "does not start with MURA-v1.1/"),
        (f"{P}/image1.png,1", "expected 1 column"),
    ],
)
def test_bad_image_line(tmp_path, line, expected):
    root = write_mura(tmp_path, [f"{P}/image1.png", line], [f"{P}/,1"])
    found = messages(read_manifest(root))
    assert len(found) == 1
    assert found[0].startswith("MURA-v1.1/train_image_paths.csv:2: ")
    assert expected in found[0]


@pytest.mark.parametrize(
    "line, expected",
    [
        (f"{Q}/,2", "label '2' is not 0 (normal) or 1 (abnormal)"),
        (f"{Q}/", "expected 2 columns"),
        ("MURA-v1.1/train/XR_FOOT/patient00001/study1_negative/,0", "unknown body part XR_FOOT"),
        (f"{P}/,1", "duplicate: patient00001 humerus study1 (train) is already labeled on line 1"),
    ],
)
def test_bad_label_line(tmp_path, line, expected):
    root = write_mura(tmp_path, [f"{P}/image1.png"], [f"{P}/,1", line])
    found = messages(read_manifest(root))
    assert len(found) == 1 and found[0].startswith("MURA-v1.1/train_labeled_studies.csv:2: ")
    assert expected in found[0]


def test_header_rows_are_recognised(tmp_path):
    root = write_mura(tmp_path, ["path", f"{P}/image1.png"], ["path,label", f"{P}/,1"])
    found = messages(read_manifest(root))
    assert found == [
        "MURA-v1.1/train_labeled_studies.csv:1: looks like a header row; MURA's CSVs have none: delete this line",
        "MURA-v1.1/train_image_paths.csv:1: looks like a header row; MURA's CSVs have none: delete this line",
    ]


def test_duplicate_image_line(tmp_path):
    root = write_mura(tmp_path, [f"{P}/image1.png", f"{P}/image2.png", f"{P}/image1.png"], [f"{P}/,1"])
    assert messages(read_manifest(root)) == [
        f"MURA-v1.1/train_image_paths.csv:3: duplicate: {P}/image1.png is already listed on line 1: "
        "delete one of the two lines"
    ]


def test_image_without_label(tmp_path):
    root = write_mura(tmp_path, [f"{P}/image1.png", f"{Q}/image1.png", f"{Q}/image2.png"], [f"{P}/,1"])
    manifest = read_manifest(root)
    assert messages(manifest, resolve_labels(manifest)) == [
        "MURA-v1.1/train_image_paths.csv:2: patient00001 shoulder study1 (train) has 2 image(s) but no label: "
        "add its study folder to train_labeled_studies.csv"
    ]


def test_label_disagreeing_with_folder_is_refused_unless_chosen(tmp_path):
    root = write_mura(tmp_path, [f"{P}/image1.png", f"{Q}/image1.png"], [f"{P}/,0", f"{Q}/,1"])
    manifest = read_manifest(root)
    found = messages(manifest, resolve_labels(manifest))
    assert len(found) == 2, "every conflict is listed, not only the first"
    assert found[0] == (
        "MURA-v1.1/train_labeled_studies.csv:1: patient00001 humerus study1 (train) is labeled 0 (normal) here "
        "but its images are in study1_positive: fix one, or choose which wins with --labels-from csv|folder"
    )
    by_csv = resolve_labels(manifest, "csv")
    assert by_csv.problems == [] and len(by_csv.conflicts) == 2
    assert {k.part: v for k, v in by_csv.labels.items()} == {"humerus": 0, "shoulder": 1}
    by_folder = resolve_labels(manifest, "folder")
    assert {k.part: v for k, v in by_folder.labels.items()} == {"humerus": 1, "shoulder": 0}


def test_parts_filter_ignores_other_parts(tmp_path):
    root = write_mura(tmp_path, [f"{P}/image1.png", f"{Q}/image1.png"], [f"{P}/,1", f"{Q}/,0"])
    manifest = read_manifest(root, parts=("shoulder",))
    assert [i.study.part for i in manifest.images] == ["shoulder"]
    assert [k.part for k in manifest.labels] == ["shoulder"]
