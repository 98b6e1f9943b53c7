"""Provenance: every ingest logged, every label change kept, splits pinned to the labels they were made with,
runs and evaluations that say which labels they used."""

from __future__ import annotations

import hashlib
import json
from contextlib import contextmanager
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select, text

from boneclf.cli.main import cli
from boneclf.data.audit import audit_split
from boneclf.data.ingest import ingest_mura
from boneclf.data.splits import Record, SplitOptions, assignment_hash, create_split, rebase_split
from boneclf.errors import BonedbError, InputProblems
from boneclf.ml.evaluation import evaluate_run
from boneclf.ml.training import TrainConfig, train
from boneclf.store.provenance import label_history, list_ingests
from boneclf.store.runs import get_run, latest_evaluation
from boneclf.store.schema import Image, Patient, SplitAssignment, SplitVersion, Study

from conftest import FAST, ingest_outcomes, prepare_synth_split, snapshot


def cli_run(engine, *args):
    url = engine.url.render_as_string(hide_password=False)
    return CliRunner().invoke(cli, ["--database-url", url, *map(str, args)], catch_exceptions=False)


def csv_hashes(root: Path) -> dict[str, str]:
    folder = root / "MURA-v1.1"
    return {f"MURA-v1.1/{p.name}": hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.glob("*.csv")}


def rename_studies(root: Path, folders: list[str]) -> dict[str, str]:
    """Relabel studies the way a community effort does: rename each study folder (negative <-> positive) and
    rewrite both CSVs to match. Returns old folder -> new folder."""
    renames = {}
    for folder in folders:
        new = (folder.replace("_negative", "_positive") if folder.endswith("_negative")
               else folder.replace("_positive", "_negative"))
        (root / folder).rename(root / new)
        renames[folder] = new
    for path in (root / "MURA-v1.1").glob("*.csv"):
        data = path.read_bytes().decode()
        for old, new in renames.items():
            data = data.replace(old + "/", new + "/")
        if path.name.endswith("_labeled_studies.csv"):
            lines = [line.split(",") for line in data.split("\n") if line]
            data = "".join(f"{study},{1 if study.rstrip('/').endswith('_positive') else 0}\n" for study, _ in lines)
        path.write_bytes(data.encode())
    return renames


def pinned(engine, split: str) -> dict[int, tuple[str, int]]:
    """image id -> (subset, pinned label) of a split."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(SplitAssignment.image_id, SplitAssignment.subset, SplitAssignment.label)
            .join(SplitVersion, SplitVersion.id == SplitAssignment.split_id).where(SplitVersion.name == split)
        ).all()
    return {image_id: (subset, label) for image_id, subset, label in rows}


def study_folders(engine, split: str) -> dict[str, list[str]]:
    """subset -> sorted study folders (as in the CSVs) of a split."""
    folders: dict[str, set[str]] = {}
    with engine.connect() as conn:
        rows = conn.execute(
            select(SplitAssignment.subset, Image.path)
            .join(Image, Image.id == SplitAssignment.image_id)
            .join(SplitVersion, SplitVersion.id == SplitAssignment.split_id).where(SplitVersion.name == split)
        ).all()
    for subset, path in rows:
        folders.setdefault(subset, set()).add(path.rpartition("/")[0])
    return {subset: sorted(found) for subset, found in folders.items()}


def test_relabel_after_training_is_logged_kept_pinned_and_rebased(engine, tmp_path):
    root = tmp_path / "data"
    prepare_synth_split(engine, root, 40, 32)
    first_hashes = csv_hashes(root)
    runs_dir = tmp_path / "runs"
    [run] = train(engine, TrainConfig(stage="fracture", split="s", shared=True, image_size=32, epochs=1,
                                      runs_dir=str(runs_dir), **FAST), verbose=0)
    assert get_run(engine, run.run_id).label_version == 1 == run.label_version
    before = pinned(engine, "s")

    # Relabel 10 studies by renaming their folders, test studies first so that the score can change.
    folders = study_folders(engine, "s")
    chosen = (folders["test"] + folders["train"])[:10]
    renames = rename_studies(root, chosen)
    report = ingest_mura(engine, root)
    assert len(report.relabeled) == 10 and {r.reason for r in report.relabeled} == {"folder rename"}
    assert report.images_added == 0 and report.ingest_id == 2

    # The log has both ingests, with the CSVs each one read.
    first, second = list_ingests(engine)
    assert (first.outcome, second.outcome) == ("applied", "applied")
    assert first.command == second.command == "ingest" and first.dataset == "mura-v1.1"
    assert first.source_sha256 == first_hashes and second.source_sha256 == csv_hashes(root) != first_hashes
    assert first.images_added > 0 and first.studies_relabeled == 0
    assert second.studies_relabeled == 10 and second.images_added == 0 and second.images_moved == report.images_moved
    assert second.options["labels_from"] is None and second.host and second.bonedb_version

    # History lists the 10 changes with old and new labels, the ingest, the reason and the new folder.
    history = label_history(engine, dataset="mura-v1.1")
    assert len(history.events) == 10
    expected = {new + "/": (int(old.endswith("_positive")), int(new.endswith("_positive")))
                for old, new in renames.items()}
    assert {e.source: (e.old_label, e.new_label) for e in history.events} == expected
    assert {(e.by, e.reason) for e in history.events} == {("ingest 2", "folder rename")}
    assert len(label_history(engine, since=1).events) == 10 and label_history(engine, since=2).events == []
    assert len(label_history(engine, ingest=2).events) == 10
    _top, _split, part_dir, patient, study_dir = chosen[0].split("/")
    one = label_history(engine, dataset="mura-v1.1",
                        study=(patient, part_dir.removeprefix("XR_").lower(), int(study_dir[5:].split("_")[0])))
    assert len(one.events) == 1 and one.current_label == one.events[0].new_label
    shown = cli_run(engine, "history", "mura-v1.1", patient, part_dir.removeprefix("XR_").lower(),
                    study_dir[5:].split("_")[0])
    assert shown.exit_code == 0 and "folder rename" in shown.output and "ingest 2" in shown.output
    assert len(json.loads(cli_run(engine, "history", "--since", 1, "--json").output)["events"]) == 10
    log = json.loads(cli_run(engine, "log", "--json").output)
    assert [e["id"] for e in log] == [1, 2] and log[1]["studies_relabeled"] == 10

    # The split kept its labels; evaluating the old run uses them and says what changed.
    assert pinned(engine, "s") == before
    relabeled_test = len([f for f in chosen if f in folders["test"]])
    shown = cli_run(engine, "evaluate", run.run_id)
    assert shown.exit_code == 0, shown.output
    warning = [line for line in shown.stderr.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1 and f"labels of {relabeled_test} test studies changed since split 's'" in warning[0]
    assert "against the split's pinned labels, as of ingest 1" in shown.output
    assert "note: dataset mura-v1.1 is synthetic (drawn by `bonedb synth`)" in shown.output, "drawn data never passes"
    stored = latest_evaluation(engine, run.run_id)
    assert (stored.labels, stored.label_version) == ("pinned", 1)
    with engine.connect() as conn:
        split_hash = conn.execute(select(SplitVersion.content_hash).where(SplitVersion.name == "s")).scalar()
    assert stored.split_hash == split_hash == get_run(engine, run.run_id).split_hash
    pinned_score = evaluate_run(engine, run.run_id, "test")

    # --labels current scores against today's labels, and is recorded as such.
    current = evaluate_run(engine, run.run_id, "test", labels="current")
    assert (current.labels, current.label_version) == ("current", 2)
    stored = latest_evaluation(engine, run.run_id)
    assert (stored.id, stored.labels, stored.label_version) == (current.evaluation_id, "current", 2)
    truth = [sum(row) for row in pinned_score.overall.image.confusion]
    truth_now = [sum(row) for row in current.overall.image.confusion]
    assert truth != truth_now and sum(truth) == sum(truth_now)
    shown = cli_run(engine, "runs", "show", run.run_id)
    assert "pinned labels, as of ingest 1" in shown.output and "against today's labels, as of ingest 2" in shown.output
    assert split_hash in shown.output

    # train and audit split say so in one line.
    shown = cli_run(engine, "train", "--stage", "fracture", "--split", "s", "--shared", "--arch", "cnn", "--weights",
                    "none", "--image-size", 32, "--epochs", 1, "--augment", "flip", "--no-tensorboard",
                    "--runs-dir", runs_dir)
    assert shown.exit_code == 0, shown.output
    warning = [line for line in shown.stderr.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1 and "labels of 10 studies changed since split 's' was made" in warning[0]
    lines = shown.output.splitlines()
    assert lines[-1].startswith("note: dataset mura-v1.1 is synthetic (drawn by `bonedb synth`)"), lines[-2:]
    assert get_run(engine, run.run_id + 1).label_version == 1
    audit = audit_split(engine, "s")
    assert audit.label_changes.studies == 10 and sum(audit.label_changes.per_part.values()) == 10
    shown = cli_run(engine, "audit", "split", "s")
    assert [line for line in shown.output.splitlines() if "labels of 10 studies changed" in line]

    # A re-based split has the same subsets and differs from the old one only in those labels.
    rebased = rebase_split(engine, "s2", "s")
    assert rebased.created and rebased.changes.studies == 10 and rebased.content_hash != split_hash
    old, new = pinned(engine, "s"), pinned(engine, "s2")
    assert old.keys() == new.keys()
    assert all(old[i][0] == new[i][0] for i in old)
    with engine.connect() as conn:
        images = conn.execute(select(Image.id, Image.path)).all()
    relabeled_ids = {i for i, path in images if path.rpartition("/")[0] in renames.values()}
    assert {i for i in old if old[i][1] != new[i][1]} == relabeled_ids and relabeled_ids
    again = rebase_split(engine, "s2", "s")
    assert not again.created and again.content_hash == rebased.content_hash
    assert cli_run(engine, "split", "create", "s3", "--from", "s", "--seed", 3).exit_code == 2
    shown = cli_run(engine, "split", "create", "s3", "--from", "s2")
    assert "re-based from split 's2': no label changed" in shown.output

    # Bad input: --labels current on a split whose images were since removed from the dataset.
    gone = next(i for i in old if old[i][0] == "test")
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM images WHERE id = :id"), {"id": gone})
    shown = cli_run(engine, "evaluate", run.run_id, "--labels", "current")
    assert shown.exit_code == 1
    assert shown.stderr.startswith("error: split 's' lost 1 image(s), removed from its dataset since it was made")
    assert len(shown.stderr.strip().splitlines()) == 1
    kept = evaluate_run(engine, run.run_id, "test")
    assert kept.label_changes.images_removed == 1 and kept.labels == "pinned"


@contextmanager
def _interrupt(_total: int, _label: str):
    """A progress bar whose user presses Ctrl-C while --verify reads the images."""

    def advance(_n: int = 1) -> None:
        raise KeyboardInterrupt

    yield advance


def test_refused_and_interrupted_ingests_are_logged_and_write_nothing_else(engine, mura):
    ingest_mura(engine, mura, splits=("valid",))
    before = snapshot(engine, log=False)
    paths = mura / "MURA-v1.1" / "train_image_paths.csv"
    good = paths.read_bytes()
    paths.write_bytes(b"MURA-v1.1/train/XR_KNEE/patient00001/study1_positive/image1.png\r\n" + good)
    with pytest.raises(InputProblems):
        ingest_mura(engine, mura)
    paths.write_bytes(good)

    with pytest.raises(KeyboardInterrupt):
        ingest_mura(engine, mura, verify=True, progress=_interrupt)
    assert snapshot(engine, log=False) == before
    applied, refused, interrupted = list_ingests(engine)
    assert (applied.outcome, refused.outcome, interrupted.outcome) == ("applied", "refused", "interrupted")
    assert "unknown body part XR_KNEE" in refused.message and "nothing was written" in refused.message
    assert refused.source_sha256["MURA-v1.1/train_image_paths.csv"] != hashlib.sha256(good).hexdigest()
    assert interrupted.options["verify"] is True and interrupted.images_added == 0
    # A run that finds nothing to do leaves no row.
    ingest_mura(engine, mura, splits=("valid",))
    assert ingest_outcomes(engine) == ["applied", "refused", "interrupted"]
    shown = cli_run(engine, "log")
    assert shown.exit_code == 0 and [line.split()[0] for line in shown.output.splitlines()[2:]] == ["1", "2", "3"]


def test_each_reason_and_source_is_recorded(engine, mura):
    ingest_mura(engine, mura)
    labels_file = mura / "MURA-v1.1" / "valid_labeled_studies.csv"
    original = labels_file.read_text()
    lines = original.split("\n")
    lines[:2] = [f"{line[:-1]}{1 - int(line[-1])}" for line in lines[:2]]
    labels_file.write_text("\n".join(lines))
    with pytest.raises(InputProblems):
        ingest_mura(engine, mura)  # the CSV disagrees with the folders: refused, logged
    ingest_mura(engine, mura, labels_from="csv")  # the CSV wins
    labels_file.write_text(original)
    back = ingest_mura(engine, mura)  # CSV and folders agree again: the CSV changed the label back
    assert [(r.reason, r.source) for r in back.relabeled] == [
        ("labels csv", "MURA-v1.1/valid_labeled_studies.csv:1"), ("labels csv", "MURA-v1.1/valid_labeled_studies.csv:2")]
    events = label_history(engine, dataset="mura-v1.1").events
    assert [(e.by, e.reason, e.source) for e in events] == [
        ("ingest 3", "labels-from csv", "MURA-v1.1/valid_labeled_studies.csv:1"),
        ("ingest 3", "labels-from csv", "MURA-v1.1/valid_labeled_studies.csv:2"),
        ("ingest 4", "labels csv", "MURA-v1.1/valid_labeled_studies.csv:1"),
        ("ingest 4", "labels csv", "MURA-v1.1/valid_labeled_studies.csv:2"),
    ]
    assert [(e.old_label, e.new_label) for e in events[:2]] == [(e.new_label, e.old_label) for e in events[2:]]
    assert ingest_outcomes(engine) == ["applied", "refused", "applied", "applied"]
    # --labels-from folder against a disagreeing CSV: the folder is the source.
    labels_file.write_text("\n".join(lines))
    report = ingest_mura(engine, mura, labels_from="folder")
    assert not report.relabeled and not report.changed  # the folders already won: nothing to log
    assert len(ingest_outcomes(engine)) == 4


def test_history_of_an_unknown_study_or_ingest_is_one_line(engine, mura):
    ingest_mura(engine, mura)
    with engine.connect() as conn:
        patient, part = conn.execute(select(Patient.patient_key, Study.body_part)
                                     .join(Study, Study.patient_id == Patient.id).limit(1)).one()
    with pytest.raises(BonedbError, match=f"no study patient{patient} {part} 99 in dataset 'mura-v1.1'"):
        label_history(engine, dataset="mura-v1.1", study=(f"patient{patient}", part, 99))
    for args in (["history", "mura-v1.1", f"patient{patient}", part, "99"],
                 ["history", "mura-v1.1", "patient99999", "hand", "1"],
                 ["history", "--since", "7"], ["history", "no-such-dataset"]):
        shown = cli_run(engine, *args)
        assert shown.exit_code == 1 and len(shown.stderr.strip().splitlines()) == 1, shown.stderr
        assert shown.stderr.startswith("error: no ")
    assert "patient99999" in cli_run(engine, "history", "mura-v1.1", "patient99999", "hand", "1").stderr
    shown = cli_run(engine, "history", "mura-v1.1", f"patient{patient}", part, "1")
    assert shown.exit_code == 0 and "no label change recorded" in shown.output


def test_split_hash_covers_pinned_labels(engine, mura):
    records = [Record(1, "a.png", "1", 1, "hand", 0, "train"), Record(2, "b.png", "2", 2, "hand", 1, "train")]
    flipped = [records[0]._replace(label=1), records[1]]
    subsets = {1: "train", 2: "test"}
    assert assignment_hash(records, subsets) != assignment_hash(flipped, subsets)

    ingest_mura(engine, mura)
    options = SplitOptions("mura-v1.1", ("hand", "shoulder", "wrist", "elbow", "finger", "forearm", "humerus"),
                           test_from="carve")
    made = create_split(engine, "a", options)
    labels_file = mura / "MURA-v1.1" / "train_labeled_studies.csv"
    labels_file.write_text("\n".join(f"{line[:-1]}{1 - int(line[-1])}" if i == 0 else line
                                     for i, line in enumerate(labels_file.read_text().split("\n"))))
    ingest_mura(engine, mura, labels_from="csv")
    again = create_split(engine, "a", options)
    assert not again.created and again.content_hash == made.content_hash and "labels changed" in again.note
    other = create_split(engine, "b", options)  # the same options on today's labels: another hash
    assert other.content_hash != made.content_hash
    with engine.connect() as conn:
        versions = dict(conn.execute(select(SplitVersion.name, SplitVersion.label_version)).all())
    assert versions == {"a": 1, "b": 2}
