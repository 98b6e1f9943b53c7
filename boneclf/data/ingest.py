"""`bonedb ingest`: MURA's CSVs into the database, atomically, idempotently, at bulk speed.

Everything is read and checked before the first write; the writes then run in one
transaction as a handful of set-based statements (one SELECT per table to learn what is
there, executemany INSERTs for what is new, UPDATEs only for what changed). A run that changes
anything is logged in that transaction (one row), with one history row per relabeled study
(one executemany); a refused, interrupted or failed run is logged after the rollback.

A steward's decision (`bonedb labels set`) stands: where the files give a decided study another label,
the ingest keeps the decision and reports the conflict, naming the study (`review_conflicts`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Connection, Engine, bindparam, insert, select, update

from boneclf.errors import NOTHING_WRITTEN, BonedbError, InputProblems, Problem, on_interrupt
from boneclf.progress import ProgressFactory, silent
from boneclf.results import Result
from boneclf.store.bulk import insert_rows, paused_gc
from boneclf.store.keys import inserted_id
from boneclf.store.locks import exclusive
from boneclf.store.provenance import (
    IngestCounts,
    IngestRecord,
    LabelChangeRow,
    log_applied,
    log_label_changes,
    logged_if_unapplied,
    reviewed_labels,
)
from boneclf.store.schema import Dataset, Image, Patient, Study
from boneclf.vocabulary import BODY_PARTS, SOURCE_SPLITS, label_word

from .duplicates import regroup
from .formats import TRAINABLE_FORMATS, record_exclusions
from .labels import LabelConflict, resolve_labels
from .mura_reader import ImageRow, LabelRow, StudyKey, read_manifest
from .names import check_name, check_root
from .stats import DatasetStats, dataset_stats
from .synth import is_synthetic
from .verify import FileFacts, inspect_files, outside

DEFAULT_DATASET = "mura-v1.1"

_datasets = Dataset.__table__
_patients = Patient.__table__
_studies = Study.__table__
_images = Image.__table__


@dataclass(frozen=True)
class Relabel:
    study: StudyKey
    old_label: int
    new_label: int
    reason: str = ""  # folder rename, labels csv, labels-from csv or labels-from folder
    source: str = ""  # the CSV file:line or the study folder the new label came from

    def to_dict(self) -> dict:
        return {"study": self.study.describe(), "old_label": self.old_label, "new_label": self.new_label,
                "reason": self.reason, "source": self.source}


@dataclass(frozen=True)
class ReviewConflict:
    """The files give a study another label than a steward's decision, which stands (`bonedb labels set`)."""

    study: StudyKey
    file_label: int  # what this ingest's CSV (or folders) say
    reviewed_label: int  # what the steward decided, kept
    reviewer: str
    log_id: int  # the decision's row in the ingest log

    def to_dict(self) -> dict:
        return {"study": self.study.describe(), "file_label": self.file_label, "reviewed_label": self.reviewed_label,
                "reviewer": self.reviewer, "log_id": self.log_id}

    def describe(self) -> str:
        return (f"{self.study.describe()}: the files say {self.file_label} ({label_word(self.file_label)}), "
                f"review by {self.reviewer} (log {self.log_id}) decided {self.reviewed_label} "
                f"({label_word(self.reviewed_label)}), which stands; to take the files' label, decide again "
                "with `bonedb labels set`")


@dataclass
class IngestReport(Result):
    dataset: str
    root: str
    parts: tuple[str, ...]
    splits: tuple[str, ...]
    patients_added: int = 0
    studies_added: int = 0
    images_added: int = 0
    images_moved: int = 0  # same image (study, number), new path: a renamed study folder
    images_measured: int = 0  # size, dimensions or hash recorded or changed by --verify
    images_unchanged: int = 0
    images_stale: int = 0  # in the database for these parts and splits, no longer listed
    relabeled: list[Relabel] = field(default_factory=list)
    conflicts_settled: list[LabelConflict] = field(default_factory=list)
    review_conflicts: list[ReviewConflict] = field(default_factory=list)  # decided labels kept against the files
    labels_from: str | None = None
    skipped: list[Problem] = field(default_factory=list)
    unused_labels: int = 0
    root_changed_from: str | None = None
    stats: DatasetStats | None = None
    ingest_id: int | None = None  # its row in the ingest log, when it changed anything
    duplicate_groups: int | None = None  # exact and near groups after --verify (None: not computed)
    synthetic: bool = False  # drawn by `bonedb synth` (its marker file lies beside the CSVs)

    computed = ("changed",)

    @property
    def changed(self) -> bool:
        return bool(
            self.patients_added or self.studies_added or self.images_added or self.images_moved
            or self.images_measured or self.relabeled or self.root_changed_from
        )


def ingest_mura(
    engine: Engine,
    root: Path,
    *,
    dataset: str = DEFAULT_DATASET,
    parts: tuple[str, ...] = BODY_PARTS,
    splits: tuple[str, ...] = SOURCE_SPLITS,
    verify: bool = False,
    labels_from: str | None = None,
    skip_bad: bool = False,
    follow_symlinks: bool = False,
    progress: ProgressFactory = silent,
    on_wait: Callable[[str], None] | None = None,
) -> IngestReport:
    """Read, check and write one MURA download. Raises InputProblems, writing nothing, on bad input
    unless `skip_bad`, in which case bad rows are left out and listed in the report. Options are checked
    before anything is logged; every run that gets further and changes anything, or is refused,
    interrupted or fails, leaves a row in the ingest log. With `verify`, images that symbolic links place
    outside the root are bad rows unless `follow_symlinks`."""
    check_name("dataset", dataset, "--dataset")
    options = {"parts": sorted(parts), "splits": list(splits), "verify": verify, "labels_from": labels_from,
               "skip_bad": skip_bad, **({"follow_symlinks": True} if follow_symlinks else {})}
    record = IngestRecord("ingest", dataset, check_root(Path(root).expanduser().absolute()), options)
    # One ingest at a time per database: a second one waits, then finds the work done.
    with paused_gc(), on_interrupt(NOTHING_WRITTEN), exclusive(engine, "ingest", on_wait=on_wait), \
            logged_if_unapplied(engine, record):
        return _ingest(engine, root, dataset, parts, splits, verify, labels_from, skip_bad, follow_symlinks,
                       progress, record)


def _confined(root: Path, images: list, problems: list, left_out: list, or_skip: str) -> list:
    """Without --verify no file is opened, but a symbolic link that places an image outside ROOT is still
    refused (export and training would read beyond the dataset): only the path is resolved."""
    kept = []
    for image in images:
        real = outside(root, root / image.path)
        if real is not None and os.path.exists(real):
            why = (f"a symbolic link to {real}, outside the dataset folder: copy the file in, or pass "
                   "--follow-symlinks to read it there")
            problems.append(Problem(image.file, image.line, f"refused {root / image.path}: {why}{or_skip}"))
            left_out.append((image.path, why))
        else:
            kept.append(image)
    return kept


def _ingest(engine, root, dataset, parts, splits, verify, labels_from, skip_bad, follow_symlinks, progress,
            record: IngestRecord) -> IngestReport:
    manifest = read_manifest(root, parts, splits)
    record.source_root, record.source_sha256 = str(manifest.root), manifest.csv_sha256
    labels = resolve_labels(manifest, labels_from)
    problems = manifest.problems + labels.problems
    images = [image for image in manifest.images if image.study not in labels.bad_studies]

    facts: dict[str, FileFacts] = {}
    left_out: list[tuple[str, str]] = []  # (path, reason): files --verify found and --skip-bad leaves out
    or_skip = "" if skip_bad else ", or leave it out with --skip-bad"  # advice only to whoever has not taken it
    if verify:
        with progress(len(images), "Verifying images") as advance:
            checks = inspect_files(manifest.root, [image.path for image in images], advance,
                                   confined=not follow_symlinks)
        failed = set()
        for image, check in zip(images, checks):
            if check.error is not None:
                problems.append(Problem(image.file, image.line, f"{check.error}: replace or restore the file"
                                        f"{or_skip}"))
                failed.add(image.path)
                left_out.append((image.path, check.beside_path))
            elif check.facts.file_format not in TRAINABLE_FORMATS:
                why = (f"{check.facts.file_format} content in a {Path(image.path).suffix} file: training reads "
                       f"{', '.join(sorted(TRAINABLE_FORMATS))}; convert it (e.g. to PNG)")
                problems.append(Problem(image.file, image.line, f"{image.path}: {why}{or_skip}"))
                failed.add(image.path)
                left_out.append((image.path, why))
            else:
                facts[image.path] = check.facts
        images = [image for image in images if image.path not in failed]
    elif not follow_symlinks:
        images = _confined(manifest.root, images, problems, left_out, or_skip)

    if problems and not skip_bad:
        raise InputProblems(problems, f"{len(problems)} problem(s) in {manifest.dataset_dir}; nothing was written")

    report = IngestReport(
        dataset=dataset,
        root=str(manifest.root),
        parts=tuple(parts),
        splits=tuple(splits),
        conflicts_settled=labels.conflicts,
        labels_from=labels_from,
        skipped=problems,
        unused_labels=len(labels.unused_labels),
        synthetic=is_synthetic(manifest.dataset_dir),
    )
    with engine.begin() as conn:
        changes = _write(conn, report, images, labels.labels, facts, manifest.labels)
        record_exclusions(conn, _dataset_id(conn, report), left_out)
        if report.changed:
            record.counts = _counts(report)
            report.ingest_id = log_applied(conn, record)
            log_label_changes(conn, report.ingest_id, changes)
    with on_interrupt("the ingest was written; only its summary was cut short (`bonedb stats` shows it)"):
        report.stats = dataset_stats(engine, dataset, parts, splits)
    return report


def _counts(report: IngestReport) -> IngestCounts:
    return IngestCounts(
        patients_added=report.patients_added, studies_added=report.studies_added, images_added=report.images_added,
        studies_relabeled=len(report.relabeled), images_moved=report.images_moved,
        images_measured=report.images_measured, images_unchanged=report.images_unchanged,
        rows_skipped=len(report.skipped),
    )


def _write(
    conn: Connection,
    report: IngestReport,
    images: list[ImageRow],
    labels: dict[StudyKey, int],
    facts: dict[str, FileFacts],
    label_rows: dict[StudyKey, LabelRow],
) -> list[LabelChangeRow]:
    """Write what is new or changed; returns the label changes for the history."""
    dataset_id = _dataset_id(conn, report)

    patient_ids = _patient_ids(conn, dataset_id)
    new_patients = sorted({image.study.patient for image in images} - patient_ids.keys())
    if new_patients:
        insert_rows(conn, _patients, ("dataset_id", "patient_key"), [(dataset_id, key) for key in new_patients])
        patient_ids = _patient_ids(conn, dataset_id)
    report.patients_added = len(new_patients)

    study_ids, relabels = _write_studies(conn, report, dataset_id, patient_ids, {image.study for image in images},
                                         labels)
    moved_studies = _write_images(conn, report, dataset_id, patient_ids, study_ids, images, facts)
    if report.root_changed_from:
        _check_new_root(conn, dataset_id, report)
    if facts:  # --verify read every file: its duplicate groups land with it
        report.duplicate_groups = len(regroup(conn, dataset_id))
    if not relabels:
        return []
    report.relabeled = _explain(relabels, moved_studies, report, label_rows, images)
    return [(study_id, r.old_label, r.new_label, r.reason, r.source)
            for (study_id, *_), r in zip(relabels, report.relabeled)]


def _explain(relabels, moved_studies: set[int], report: IngestReport, label_rows: dict[StudyKey, LabelRow],
             images: list[ImageRow]) -> list[Relabel]:
    """Why each study's label changed, and the CSV line or study folder its new label came from."""
    wanted = {key for _, key, _, _ in relabels}
    folders: dict[StudyKey, str] = {}
    for image in images:
        if image.study in wanted and image.study not in folders:
            folders[image.study] = image.path.rpartition("/")[0] + "/"
    settled = {conflict.study for conflict in report.conflicts_settled}
    explained = []
    for study_id, key, old, new in relabels:
        row = label_rows[key]
        csv_line = f"{row.file}:{row.line}"
        if key in settled:
            # The CSV and the folder disagree; --labels-from chose.
            reason = f"labels-from {report.labels_from}"
            source = csv_line if report.labels_from == "csv" else folders[key]
        elif study_id in moved_studies:
            reason, source = "folder rename", folders[key]
        else:
            reason, source = "labels csv", csv_line
        explained.append(Relabel(key, old, new, reason, source))
    return explained


def _dataset_id(conn: Connection, report: IngestReport) -> int:
    row = conn.execute(select(_datasets).where(_datasets.c.name == report.dataset)).first()
    if row is None:
        result = conn.execute(insert(_datasets).values(name=report.dataset, root=report.root, kind="mura",
                                                       synthetic=report.synthetic))
        return inserted_id(result)
    if row.kind != "mura":
        raise BonedbError(
            f"dataset {report.dataset!r} holds a {row.kind} dataset, not MURA: pass another --dataset name"
        )
    if row.root != report.root:
        # The same dataset read from a new place (moved disk, relabeled copy): keep identities, move the root.
        conn.execute(update(_datasets).where(_datasets.c.id == row.id).values(root=report.root))
        report.root_changed_from = row.root
    if bool(row.synthetic) != report.synthetic:
        # Synthetic data ingested before bonedb recorded it, or its marker removed on purpose: the source says.
        conn.execute(update(_datasets).where(_datasets.c.id == row.id).values(synthetic=report.synthetic))
    return row.id


def _check_new_root(conn: Connection, dataset_id: int, report: IngestReport) -> None:
    """A dataset read from a new folder keeps every image it has: each must be there, or the move is refused
    (rolled back), since rows pointing at absent files would break export and training later."""
    root = Path(report.root)
    paths: Sequence[str] = conn.execute(
        select(_images.c.path).where(_images.c.dataset_id == dataset_id)).scalars().all()
    absent = sorted(path for path in paths if not (root / path).is_file())
    if absent:
        raise BonedbError(
            f"dataset {report.dataset!r} was read from {report.root_changed_from}; {report.root} lacks "
            f"{len(absent):,} of its {len(paths):,} images (e.g. {absent[0]}): ingest this folder under "
            "another --dataset name, or copy the missing files there first; nothing was written"
        )


def _patient_ids(conn: Connection, dataset_id: int) -> dict[str, int]:
    rows = conn.execute(
        select(_patients.c.patient_key, _patients.c.id).where(_patients.c.dataset_id == dataset_id)
    )
    return dict(rows.all())


def _study_rows(conn: Connection, dataset_id: int) -> dict[tuple[int, str, int], tuple[int, int, str]]:
    """(patient id, part, study number) -> (study id, label, split)."""
    rows = conn.execute(
        select(
            _studies.c.patient_id, _studies.c.body_part, _studies.c.study_number,
            _studies.c.id, _studies.c.label, _studies.c.source_split,
        ).where(_studies.c.dataset_id == dataset_id)
    )
    return {(r[0], r[1], r[2]): (r[3], r[4], r[5]) for r in rows}


def _write_studies(conn, report, dataset_id, patient_ids, keys, labels):
    """Insert new studies, update changed labels; returns ({identity: study id}, [(id, key, old, new)])."""
    existing = _study_rows(conn, dataset_id)
    new_rows, relabels = [], []
    for key in sorted(keys):
        identity = (patient_ids[key.patient], key.part, key.number)
        label = labels[key]
        if identity not in existing:
            new_rows.append((dataset_id, identity[0], key.part, key.split, key.number, label))
            continue
        study_id, old_label, old_split = existing[identity]
        if old_split != key.split:
            raise BonedbError(
                f"{key.describe()} is recorded in the {old_split} split of dataset {report.dataset!r}; "
                "MURA never moves a study between splits: ingest this copy under another --dataset name"
            )
        if old_label != label:
            relabels.append((study_id, key, old_label, label))
    reviewed = reviewed_labels(conn, [study_id for study_id, *_ in relabels])
    report.review_conflicts = [ReviewConflict(key, label, reviewed[study_id].label, reviewed[study_id].reviewer,
                                              reviewed[study_id].log_id)
                               for study_id, key, _old, label in relabels if study_id in reviewed]
    relabels = [relabel for relabel in relabels if relabel[0] not in reviewed]
    if new_rows:
        insert_rows(
            conn, _studies, ("dataset_id", "patient_id", "body_part", "source_split", "study_number", "label"),
            new_rows,
        )
        existing = _study_rows(conn, dataset_id)
    if relabels:
        conn.execute(
            update(_studies).where(_studies.c.id == bindparam("b_id")).values(label=bindparam("b_label")),
            [{"b_id": study_id, "b_label": label} for study_id, _, _, label in relabels],
        )
    report.studies_added = len(new_rows)
    return {identity: row[0] for identity, row in existing.items()}, relabels


_FACT_COLUMNS = ("file_size", "width", "height", "content_hash", "perceptual_hash", "near_hash", "file_format",
                 "picture_signature")


def _write_images(conn, report, dataset_id, patient_ids, study_ids, images, facts) -> set[int]:
    """Insert, move and measure images; returns the ids of studies whose images moved (renamed folders)."""
    # Only the columns needed to decide; the fact columns only when --verify measured something.
    fact_columns = _FACT_COLUMNS if facts else ()
    rows = conn.execute(
        select(_images.c.study_id, _images.c.image_number, _images.c.id, _images.c.path,
               *(_images.c[name] for name in fact_columns))
        .where(_images.c.dataset_id == dataset_id)
    ).all()
    existing = {(r[0], r[1]): r for r in rows}
    seen: set[int] = set()
    new_rows, moves, measures = [], [], []
    for image in images:
        key = image.study
        study_id = study_ids[(patient_ids[key.patient], key.part, key.number)]
        measured = facts.get(image.path)
        values = {name: getattr(measured, name) for name in _FACT_COLUMNS} if measured else {}
        old = existing.get((study_id, image.image_number))
        if old is None:
            new_rows.append((dataset_id, study_id, image.path, image.image_number,
                             *(values.get(name) for name in fact_columns)))
            continue
        seen.add(old.id)
        changed = False
        if old.path != image.path:
            moves.append({"b_id": old.id, "b_path": image.path})
            changed = True
        if values and any(getattr(old, name) != value for name, value in values.items()):
            measures.append({"b_id": old.id, **{f"b_{name}": value for name, value in values.items()}})
            changed = True
        report.images_unchanged += not changed
    insert_rows(conn, _images, ("dataset_id", "study_id", "path", "image_number", *fact_columns), new_rows)
    if moves:
        conn.execute(update(_images).where(_images.c.id == bindparam("b_id")).values(path=bindparam("b_path")), moves)
    if measures:
        conn.execute(
            update(_images).where(_images.c.id == bindparam("b_id"))
            .values({name: bindparam(f"b_{name}") for name in _FACT_COLUMNS}),
            measures,
        )
    report.images_stale = _count_stale(conn, report, dataset_id, rows, seen)
    report.images_added, report.images_moved, report.images_measured = len(new_rows), len(moves), len(measures)
    if not moves:
        return set()
    study_of = {r.id: r.study_id for r in rows}
    return {study_of[move["b_id"]] for move in moves}


def _count_stale(conn, report, dataset_id, rows, seen) -> int:
    """Images of the ingested parts and splits that the database has and the CSVs no longer list."""
    unseen = {r.study_id for r in rows if r.id not in seen}
    if not unseen:
        return 0
    in_scope = set(conn.execute(
        select(_studies.c.id).where(
            _studies.c.dataset_id == dataset_id,
            _studies.c.body_part.in_(report.parts),
            _studies.c.source_split.in_(report.splits),
        )
    ).scalars())
    return sum(1 for r in rows if r.id not in seen and r.study_id in in_scope)
