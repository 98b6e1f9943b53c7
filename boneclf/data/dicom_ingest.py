"""`bonedb ingest-dicom`: a PACS export (DICOM files, any names) into the same patients, studies and images.

Radiographs (CR, DX) become 8-bit PNGs in a managed folder, at MURA-like paths built from keyed pseudonyms
(`XR_WRIST/patient<P>/study<S>/image<I>.png`); patients, studies and images are known only by those
pseudonyms (`dicom_identity` says what is kept and why). Other files are skipped and recorded with why.

Atomic as every ingest: every file is read, decoded and checked, and its PNG written to a staging folder
beside the managed one, before the one transaction; the PNGs move into place inside it and are removed
again if it fails. A re-ingest of the same files changes nothing. The ingest log records the source
folder, the counts, the options (the key's id, never the key) and a hash of the file listing; its
messages never quote a source path, which may itself hold a UID or a name.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image as PILImage
from sqlalchemy import Connection, Engine, bindparam, insert, select, update

from boneclf.errors import NOTHING_WRITTEN, BonedbError, InputProblems, Problem, on_interrupt
from boneclf.progress import ProgressFactory, silent
from boneclf.results import Result
from boneclf.store.bulk import insert_rows, paused_gc
from boneclf.store.flags import IDENTITY_IN_PIXELS, add_flags
from boneclf.store.keys import inserted_id
from boneclf.store.locks import exclusive
from boneclf.store.provenance import (
    IngestCounts,
    IngestRecord,
    log_applied,
    log_label_changes,
    log_unapplied,
    reviewed_labels,
)
from boneclf.store.schema import Dataset, DicomImage, Image, IngestLog, Patient, Study

from .dicom_files import DicomImage as ReadImage
from .dicom_files import Outcome, dicom_candidates, or_skip, read_dicom, text_in_pixels
from .dicom_identity import PseudonymKey
from .dicom_labels import StudyLabels, read_labels
from .dicom_parts import read_parts_map
from .duplicates import regroup
from .folder_dataset import DEFAULT_LABELS
from .formats import record_exclusions
from .verify import FileFacts, inspect_files

KIND = "dicom"
SOURCE_SPLIT = "all"  # a PACS export has no train/valid of its own: `split create --test-from carve`
DEFAULT_IMAGES = "bonedb-images"  # ./bonedb-images/<dataset> unless --images says otherwise

_datasets = Dataset.__table__
_patients = Patient.__table__
_studies = Study.__table__
_images = Image.__table__
_dicom = DicomImage.__table__


@dataclass
class DicomReport(Result):
    dataset: str
    source: str  # the folder read
    images_dir: str  # the managed folder the PNGs are in (the dataset's root)
    key_id: str  # names the pseudonym key without revealing it
    files: int = 0
    images_added: int = 0
    images_unchanged: int = 0
    patients_added: int = 0
    studies_added: int = 0
    studies_relabeled: int = 0  # labelled differently by the CSV, or labelled for the first time
    unlabelled_studies: int = 0  # in the dataset after this ingest; splits leave them out
    unknown_parts: dict[str, int] = field(default_factory=dict)  # BodyPartExamined code -> images of no known part
    flagged: int = 0  # images added that may show identity in pixels
    skipped: list[str] = field(default_factory=list)  # "path: why", left out on purpose (a CT, not DICOM, ...)
    left_out: list[str] = field(default_factory=list)  # bad files --skip-bad left out, "path: problem"
    labels_file: str | None = None
    review_conflicts: list[str] = field(default_factory=list)  # decided labels kept against the CSV, described
    ingest_id: int | None = None
    duplicate_groups: int = 0

    computed = ("changed",)

    @property
    def changed(self) -> bool:
        return bool(self.images_added or self.studies_relabeled)


@dataclass
class _Stored:
    """What the database already holds of the dataset."""

    dataset_id: int | None = None
    images_dir: Path | None = None
    sops: set[str] = field(default_factory=set)
    patients: dict[str, int] = field(default_factory=dict)  # pseudonym -> patients.id
    studies: dict[tuple[str, str], tuple[int, int, int | None]] = field(default_factory=dict)  # (study, part) ->
    # (studies.id, patients.id, label)
    numbers: dict[tuple[int, str], int] = field(default_factory=dict)  # (patient id, part) -> highest study number
    image_numbers: dict[int, int] = field(default_factory=dict)  # study id -> highest image number


def ingest_dicom(
    engine: Engine,
    root: Path,
    *,
    dataset: str,
    key: PseudonymKey,
    images_dir: Path | None = None,
    labels: Path | None = None,
    label_map: dict[str, int] | None = None,
    parts_map: Path | None = None,
    skip_bad: bool = False,
    progress: ProgressFactory = silent,
    text_detector=text_in_pixels,
) -> DicomReport:
    """Read, check and write one DICOM tree. Raises InputProblems, writing nothing, on bad files or label rows
    unless `skip_bad`, which leaves them out and lists them."""
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise BonedbError(f"{root}: no such folder")
    terms = read_parts_map(parts_map)
    label_map = label_map or DEFAULT_LABELS
    options = {
        "images": str(Path(images_dir).expanduser().resolve()) if images_dir else None,
        "labels": str(labels) if labels else None, "parts_map": str(parts_map) if parts_map else None,
        "label_map": {w: v for w, v in label_map.items() if DEFAULT_LABELS.get(w) != v},
        "skip_bad": skip_bad, "key_id": key.key_id, "key_source": key.source,
    }
    record = IngestRecord("ingest-dicom", dataset, str(root), options)
    with paused_gc(), on_interrupt(NOTHING_WRITTEN), exclusive(engine, "ingest"), _logged(engine, record):
        stored = _stored_state(engine, dataset, key, images_dir)
        target = stored.images_dir or Path(images_dir or Path(DEFAULT_IMAGES) / dataset).expanduser().resolve()
        report = DicomReport(dataset, str(root), str(target), key.key_id, labels_file=str(labels) if labels else None)
        staging = target.parent / f".{target.name}.bonedb-staging-{os.getpid()}"
        try:
            return _ingest(engine, root, key, terms, labels, label_map, skip_bad, progress, text_detector,
                           stored, staging, report, record)
        finally:
            shutil.rmtree(staging, ignore_errors=True)


@contextmanager
def _logged(engine: Engine, record: IngestRecord) -> Iterator[None]:
    """Like provenance.logged_if_unapplied, but the logged message never quotes a source path or a value read
    from a file: the count and folder of problems, or the error's own text (bonedb's, path-free), or its type."""
    try:
        yield
    except KeyboardInterrupt:
        log_unapplied(engine, record, "interrupted", "interrupted (Ctrl-C); nothing was written")
        raise
    except InputProblems as exc:
        log_unapplied(engine, record, "refused", str(exc))
        raise
    except BonedbError as exc:
        log_unapplied(engine, record, "refused", str(exc))
        raise
    except Exception as exc:
        log_unapplied(engine, record, "failed", f"{type(exc).__name__} (details withheld: they may quote a file)")
        raise


def _stored_state(engine: Engine, dataset: str, key: PseudonymKey, images_dir: Path | None) -> _Stored:
    stored = _Stored()
    with engine.connect() as conn:
        row = conn.execute(select(Dataset.id, Dataset.kind, Dataset.root).where(Dataset.name == dataset)).first()
        if row is None:
            return stored
        if row.kind != KIND:
            raise BonedbError(f"dataset {dataset!r} is a {row.kind} dataset: pass another --dataset name")
        stored.dataset_id, stored.images_dir = row.id, Path(row.root)
        if images_dir is not None and Path(images_dir).expanduser().resolve() != stored.images_dir:
            raise BonedbError(f"dataset {dataset!r} keeps its images in {row.root}: leave out --images, or pass "
                              "that folder")
        _check_same_key(conn, dataset, key)
        stored.sops = set(conn.execute(select(_dicom.c.sop_pseudonym).where(_dicom.c.dataset_id == row.id)).scalars())
        stored.patients = dict(conn.execute(select(Patient.patient_key, Patient.id)
                                            .where(Patient.dataset_id == row.id)).all())
        rows = conn.execute(
            select(_dicom.c.study_pseudonym, Study.body_part, Study.id, Study.patient_id, Study.label,
                   Study.study_number, Image.image_number)
            .join(Image, Image.id == _dicom.c.image_id).join(Study, Study.id == Image.study_id)
            .where(_dicom.c.dataset_id == row.id))
        for study, part, study_id, patient_id, label, number, image_number in rows:
            stored.studies[(study, part)] = (study_id, patient_id, label)
            stored.numbers[(patient_id, part)] = max(number, stored.numbers.get((patient_id, part), 0))
            stored.image_numbers[study_id] = max(image_number, stored.image_numbers.get(study_id, 0))
    return stored


def _check_same_key(conn: Connection, dataset: str, key: PseudonymKey) -> None:
    """Another key would give every patient a second pseudonym, and splits would leak: refused."""
    options = conn.execute(select(IngestLog.options).where(
        IngestLog.dataset == dataset, IngestLog.command == "ingest-dicom", IngestLog.outcome == "applied")
        .order_by(IngestLog.id.desc()).limit(1)).scalar()
    used = (options or {}).get("key_id")
    if used and used != key.key_id:
        raise BonedbError(f"dataset {dataset!r} was ingested with pseudonym key {used}, this key is {key.key_id}: "
                          "use the same key (or another --dataset name), or the same patient would get two "
                          "pseudonyms; nothing was written")


def _ingest(engine, root: Path, key: PseudonymKey, terms, labels_path, label_map, skip_bad, progress, text_detector,
            stored: _Stored, staging: Path, report: DicomReport, record: IngestRecord) -> DicomReport:
    sources = dicom_candidates(root)
    report.files = len(sources)
    listing = hashlib.sha256()
    images: list[ReadImage] = []
    problems: list[Problem] = []
    first_of: dict[str, str] = {}  # SOP pseudonym -> the first file that had it
    with progress(len(sources), "Reading DICOM files") as advance:
        for source in sources:
            data = (root / source).read_bytes()
            listing.update(f"{source}\t{len(data)}\t{hashlib.sha256(data).hexdigest()}\n".encode())
            outcome = read_dicom(io.BytesIO(data), source, key, terms, stored.sops, text_detector, skip_bad)
            _sort_outcome(outcome, images, problems, report, first_of, root)
            advance(1)
    _check_patients(images, stored, problems, root, skip_bad)
    labels = read_labels(labels_path, key, label_map, skip_bad) if labels_path else None
    wanted = _resolve_labels(labels, images, stored, problems, skip_bad) if labels else {}
    if problems and not skip_bad:
        raise InputProblems(problems, f"{len(problems)} problem(s) in {root}; nothing was written")
    report.left_out = [str(problem) for problem in problems]
    bad = {problem.file for problem in problems}
    images = [image for image in images if str(root / image.source) not in bad]
    if not images and stored.dataset_id is None:
        raise BonedbError(f"{root}: no radiographs ({' or '.join(('CR', 'DX'))}) among {len(sources)} files "
                          f"({len(report.skipped)} skipped); nothing was written")
    new = [image for image in images if image.sop not in stored.sops]
    report.images_unchanged = len(images) - len(new)
    paths = _stage_pngs(staging, new)
    facts = _measure(staging, paths, progress)
    record.source_sha256 = {"listing": listing.hexdigest(), **({labels.file: labels.sha256} if labels else {})}
    target = Path(report.images_dir)
    placed: list[Path] = []
    try:
        with engine.begin() as conn:
            dataset_id = stored.dataset_id or inserted_id(conn.execute(insert(_datasets).values(
                name=report.dataset, root=str(target), kind=KIND)))
            record_exclusions(conn, dataset_id, _exclusions(key, report, problems, root))
            changes = _write(conn, dataset_id, stored, new, paths, facts, wanted, report)
            if report.changed:
                record.counts = IngestCounts(
                    patients_added=report.patients_added, studies_added=report.studies_added,
                    images_added=report.images_added, studies_relabeled=report.studies_relabeled,
                    images_unchanged=report.images_unchanged, rows_skipped=len(report.skipped) + len(problems))
                report.ingest_id = log_applied(conn, record)
                log_label_changes(conn, report.ingest_id, changes)
            report.unlabelled_studies = _unlabelled(conn, dataset_id)
            placed = _place(staging, target, paths)
    except BaseException:
        for path in placed:
            path.unlink(missing_ok=True)
        raise
    return report


def _sort_outcome(outcome: Outcome, images: list[ReadImage], problems: list[Problem], report: DicomReport,
                  first_of: dict[str, str], root: Path) -> None:
    if outcome.problem:
        problems.append(Problem(str(root / outcome.source), None, outcome.problem))
    elif outcome.skipped:
        report.skipped.append(f"{outcome.source}: {outcome.skipped}")
    elif outcome.image is not None:
        image = outcome.image
        if image.sop in first_of:
            report.skipped.append(f"{outcome.source}: the same image (SOPInstanceUID) as {first_of[image.sop]}")
            return
        first_of[image.sop] = outcome.source
        images.append(image)
        if image.part_source is None:
            report.unknown_parts[image.part_code] = report.unknown_parts.get(image.part_code, 0) + 1


def _check_patients(images: list[ReadImage], stored: _Stored, problems: list[Problem], root: Path,
                    skip_bad: bool) -> None:
    """A study belongs to one patient: a StudyInstanceUID under two PatientIDs is an export to fix."""
    key_of = {patient_id: patient for patient, patient_id in stored.patients.items()}
    patient_of = {study: key_of[patient_id] for (study, _part), (_id, patient_id, _label) in stored.studies.items()}
    for image in images:
        seen = patient_of.setdefault(image.study, image.patient)
        if seen != image.patient:
            problems.append(Problem(str(root / image.source), None, "its study (StudyInstanceUID) is recorded under "
                                    f"another PatientID: fix the export{or_skip(skip_bad)}"))


def _resolve_labels(labels: StudyLabels, images: list[ReadImage], stored: _Stored, problems: list[Problem],
                    skip_bad: bool) -> dict[str, tuple[int, str]]:
    """study pseudonym -> (label, "file:line"); rows naming no study read now (or, by UID, stored) are problems."""
    problems.extend(labels.problems)
    if labels.key_column == "AccessionNumber":
        studies_of: dict[str, set[str]] = defaultdict(set)
        for image in images:
            if image.accession:
                studies_of[image.accession].add(image.study)
    else:
        known = {image.study for image in images} | {study for study, _part in stored.studies}
        studies_of = {study: {study} for study in known}
    wanted = {}
    for row in labels.rows:
        studies = studies_of.get(row.pseudonym)
        if not studies:
            problems.append(Problem(labels.file, row.line, f"no DICOM file read has this {labels.key_column}: fix "
                                    f"the row{or_skip(skip_bad)}"))
            continue
        for study in studies:
            wanted[study] = (row.label, f"{labels.file}:{row.line}")
    return wanted


def image_path(image: ReadImage) -> str:
    """Where an image's PNG lives under the managed folder: MURA's layout, pseudonyms for names."""
    return f"XR_{image.part.upper()}/patient{image.patient}/study{image.study}/image{image.sop}.png"


def _stage_pngs(staging: Path, new: list[ReadImage]) -> list[str]:
    paths = []
    for image in new:
        path = image_path(image)
        target = staging / path
        target.parent.mkdir(parents=True, exist_ok=True)
        assert image.pixels is not None  # decoded: new images always are
        PILImage.fromarray(image.pixels).save(target, format="PNG")
        image.pixels = None  # written: free the memory before the next file
        paths.append(path)
    return paths


def _measure(staging: Path, paths: list[str], progress) -> list[FileFacts]:
    with progress(len(paths), "Hashing PNGs") as advance:
        checks = inspect_files(staging, paths, advance)
    facts = [check.facts for check in checks if check.facts is not None]
    if len(facts) != len(checks):
        failed = next(check.error for check in checks if check.facts is None)
        raise BonedbError(f"a PNG bonedb just wrote cannot be read back ({failed}): is the disk full?")
    return facts


def _exclusions(key: PseudonymKey, report: DicomReport, problems: list[Problem], root: Path) -> list[tuple[str, str]]:
    """(path, why) of every file left out. The path is a pseudonym of the source path: PACS exports name files
    by their UIDs, or worse, and the steward has the real names in the command's own output."""
    left_out = [tuple(line.split(": ", 1)) for line in report.skipped]
    left_out += [(str(Path(problem.file).relative_to(root)), problem.message) for problem in problems
                 if problem.line is None]
    return [(f"dicom-source/{key.pseudonym('SourcePath', source)}", why) for source, why in left_out]


def _unlabelled(conn: Connection, dataset_id: int) -> int:
    return len(conn.execute(select(_studies.c.id).where(_studies.c.dataset_id == dataset_id,
                                                        _studies.c.label.is_(None))).all())


def _place(staging: Path, target: Path, paths: list[str]) -> list[Path]:
    """Move the staged PNGs into the managed folder; returns what was placed (removed again on failure)."""
    placed = []
    for path in paths:
        destination = target / path
        destination.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / path, destination)
        placed.append(destination)
    return placed


def _write(conn: Connection, dataset_id: int, stored: _Stored, new: list[ReadImage], paths: list[str],
           facts: list[FileFacts], wanted: dict[str, tuple[int, str]], report: DicomReport) -> list:
    """Insert new patients, studies, images and their DICOM records and flags; relabel what the CSV changes.
    Returns the label changes for the history."""
    new_patients = sorted({image.patient for image in new} - stored.patients.keys())
    insert_rows(conn, _patients, ("dataset_id", "patient_key"), [(dataset_id, p) for p in new_patients])
    patients = dict(conn.execute(select(Patient.patient_key, Patient.id).where(Patient.dataset_id == dataset_id)).all())
    report.patients_added = len(new_patients)
    studies = _write_studies(conn, dataset_id, stored, new, patients, wanted, report)
    numbers = Counter(stored.image_numbers)
    image_rows = []
    for image, path, fact in sorted(zip(new, paths, facts), key=lambda item: item[1]):
        study_id = studies[(image.study, image.part)]
        numbers[study_id] += 1
        image_rows.append((dataset_id, study_id, path, numbers[study_id], fact.file_size, fact.width, fact.height,
                           fact.content_hash, fact.perceptual_hash, fact.near_hash, fact.file_format,
                           fact.picture_signature))
    insert_rows(conn, _images, ("dataset_id", "study_id", "path", "image_number", "file_size", "width", "height",
                                "content_hash", "perceptual_hash", "near_hash", "file_format", "picture_signature"),
                image_rows)
    report.images_added = len(image_rows)
    if new:
        image_ids: dict[str, int] = dict(conn.execute(select(_images.c.path, _images.c.id).where(
            _images.c.dataset_id == dataset_id)).all())
        conn.execute(insert(_dicom), [
            {"image_id": image_ids[path], "dataset_id": dataset_id, "study_pseudonym": image.study,
             "sop_pseudonym": image.sop, "part_source": image.part_source, "attributes": image.attributes}
            for image, path in zip(new, paths)])
        flags = [(image_ids[path], IDENTITY_IN_PIXELS, image.flag_reason)
                 for image, path in zip(new, paths) if image.flag_reason]
        add_flags(conn, flags)
        report.flagged = len(flags)
        report.duplicate_groups = len(regroup(conn, dataset_id))
    return _relabel(conn, stored, wanted, report)


def _write_studies(conn, dataset_id: int, stored: _Stored, new: list[ReadImage], patients: dict[str, int],
                   wanted: dict[str, tuple[int, str]], report: DicomReport) -> dict[tuple[str, str], int]:
    """(study pseudonym, part) -> studies.id, inserting the new ones numbered per patient and part."""
    keys = sorted({(patients[image.patient], image.part, image.study) for image in new}
                  - {(patient, part, study) for (study, part), (_id, patient, _l) in stored.studies.items()})
    numbers = Counter(stored.numbers)
    rows = []
    for patient_id, part, study in keys:
        numbers[(patient_id, part)] += 1
        label = wanted[study][0] if study in wanted else None
        rows.append((dataset_id, patient_id, part, SOURCE_SPLIT, numbers[(patient_id, part)], label))
    insert_rows(conn, _studies, ("dataset_id", "patient_id", "body_part", "source_split", "study_number", "label"),
                rows)
    report.studies_added = len(rows)
    ids = {(patient_id, part, number): study_id for study_id, patient_id, part, number in conn.execute(
        select(_studies.c.id, _studies.c.patient_id, _studies.c.body_part, _studies.c.study_number)
        .where(_studies.c.dataset_id == dataset_id))}
    found = {key: row[0] for key, row in stored.studies.items()}
    for (patient_id, part, study), row in zip(keys, rows):
        found[(study, part)] = ids[(patient_id, part, row[4])]
    return found


def _relabel(conn: Connection, stored: _Stored, wanted: dict[str, tuple[int, str]], report: DicomReport) -> list:
    """Stored studies the CSV labels differently (or labels for the first time): updated, with their history."""
    changes = []
    for (study, _part), (study_id, _patient, old) in sorted(stored.studies.items()):
        if study in wanted and wanted[study][0] != old:
            label, source = wanted[study]
            changes.append((study_id, old, label, "labels csv", source))
    # A steward's decision (`bonedb labels set`) stands against the CSV: kept, and the conflict reported.
    reviewed = reviewed_labels(conn, [change[0] for change in changes])
    names = {study_id: f"{study} {part}" for (study, part), (study_id, *_rest) in stored.studies.items()}
    report.review_conflicts = [
        f"study {names[study_id]}: the CSV says {label} ({source}), review by {reviewed[study_id].reviewer} (log "
        f"{reviewed[study_id].log_id}) decided {reviewed[study_id].label}, which stands"
        for study_id, _old, label, _reason, source in changes if study_id in reviewed]
    changes = [change for change in changes if change[0] not in reviewed]
    if changes:
        conn.execute(update(_studies).where(_studies.c.id == bindparam("b_id")).values(label=bindparam("b_label")),
                     [{"b_id": study_id, "b_label": label} for study_id, _old, label, _r, _s in changes])
    report.studies_relabeled = len(changes)
    return changes
