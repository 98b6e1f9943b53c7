"""`bonedb ingest-folder`: class-folder datasets (ROOT/<subset>/<label>/*.png) into the same schema.

FracAtlas- and Kaggle-style sets come this way, without patient ids. The label comes from the
folder name, the body part from an option, the patient from a file-name pattern or else one per
image. Subset folders (train, val, test) become the source's own split, named after the dataset.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine, insert, select

from boneclf.errors import NOTHING_WRITTEN, BonedbError, InputProblems, Problem, on_interrupt
from boneclf.progress import ProgressFactory, silent
from boneclf.results import Result, plural
from boneclf.store.bulk import insert_rows, paused_gc
from boneclf.store.keys import inserted_id
from boneclf.store.locks import exclusive
from boneclf.store.provenance import IngestCounts, IngestRecord, log_applied, logged_if_unapplied, reviewed_labels
from boneclf.store.schema import Dataset, Image, Patient, Study
from boneclf.vocabulary import BODY_PARTS, UNKNOWN_PART, label_word

from .duplicates import regroup
from .formats import TRAINABLE_FORMATS, record_exclusions
from .leakage import exact_duplicates, group_overlaps
from .names import PATH_LENGTH, check_name, check_root, printable
from .splits import load_records, store_assignment
from .verify import broken_link, inspect_files, outside

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}
JUNK_NAMES = {"desktop.ini", ".ds_store", "thumbs.db"}
SUBSET_NAMES = {"train": "train", "training": "train", "val": "val", "valid": "val",
                "validation": "val", "test": "test", "testing": "test"}
DEFAULT_LABELS = {
    "fractured": 1, "fracture": 1, "abnormal": 1, "positive": 1, "1": 1,
    "not fractured": 0, "non fractured": 0, "nonfractured": 0, "unfractured": 0,
    "normal": 0, "negative": 0, "0": 0,
}


def _norm(name: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[_-]", " ", name.strip().lower()))


def parse_label_map(text: str | None) -> dict[str, int]:
    """'broken=1,ok=0' added to (and overriding) the default names."""
    mapping = dict(DEFAULT_LABELS)
    for item in (text or "").split(","):
        if not item.strip():
            continue
        name, sep, value = item.rpartition("=")
        if not sep or value.strip() not in ("0", "1") or not name.strip():
            raise BonedbError(f"--label-map item {item.strip()!r}: write FOLDER=0 or FOLDER=1, e.g. 'broken=1,ok=0'")
        mapping[_norm(name)] = int(value)
    return mapping


@dataclass
class FolderImage:
    path: str  # relative to ROOT
    subset: str  # train/val/test, or "all" when the source has no subset folders
    label: int
    patient: str


@dataclass
class FolderReport(Result):
    dataset: str
    root: str
    images: int = 0
    patients: int = 0
    per_subset_label: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count
    bad_images: list[str] = field(default_factory=list)  # truncated or undecodable: reported, not fatal
    # Decodable, but in a format training cannot read (found from the bytes, whatever the name says).
    refused_formats: list[str] = field(default_factory=list)
    source_split: str | None = None
    source_split_leaks: int = 0  # patients in several subsets of the source's split
    source_split_identical_files: int = 0  # distinct contents (sha256) found in several of its subsets
    unchanged: bool = False
    ingest_id: int | None = None  # its row in the ingest log, when it changed anything
    duplicate_groups: int = 0  # exact and near duplicate groups found among its images
    unreadable: int = 0  # of bad_images, those opened and found unreadable (the others: refused unopened)
    # Studies whose label a steward decided (`labels set`, or Relabel in `serve`) while the folder still says
    # otherwise: the decision stands, as against `ingest` (README, "The label loop"); each described in words.
    review_conflicts: list[str] = field(default_factory=list)

    computed = ("left_out",)

    @property
    def left_out(self) -> dict[str, int]:
        """Every file left out, reason -> count: the junk in `skipped`, then the files named one by one in
        `bad_images` and `refused_formats`, so that a summary's count matches the lines that name them."""
        named = {"unreadable image": self.unreadable, "refused file": len(self.bad_images) - self.unreadable,
                 "format training cannot read": len(self.refused_formats)}
        return {**dict(sorted(self.skipped.items())), **{k: n for k, n in named.items() if n}}


_LEFT_OUT_WORDS = {  # each reason, singular and plural
    "system file": ("system file", "system files"),
    "not an image file": ("non-image file", "non-image files"),
    "empty file": ("empty file", "empty files"),
    "file outside a label folder": ("file outside a label folder", "files outside a label folder"),
    "unreadable image": ("unreadable image", "unreadable images"),
    "refused file": ("refused file (a link, FIFO or name bonedb cannot keep)",
                     "refused files (links, FIFOs or names bonedb cannot keep)"),
    "format training cannot read": ("image in a format training cannot read",
                                    "images in a format training cannot read"),
}


def describe_left_out(counts: dict[str, int]) -> str:
    """Counts by reason in words: "2 empty files, 1 unreadable image" ("none" for nothing)."""
    words = [plural(n, *_LEFT_OUT_WORDS.get(reason, (reason, reason))) for reason, n in counts.items() if n]
    return ", ".join(words) or "none"


def scan(root: Path, label_map: dict[str, int], patient_pattern: str | None,
         left_out: list[tuple[str, str]] | None = None, *, follow_symlinks: bool = False,
         refused: list[str] | None = None) -> tuple[list[FolderImage], Counter]:
    """Walk ROOT; returns the images and a count of skipped files by reason. Unknown label folders, and
    subset or label folders that symbolic links place outside ROOT (unless `follow_symlinks`), raise.
    Image files skipped on purpose (empty ones) are appended to LEFT_OUT as (path, reason); image files
    no row can take (broken or escaping links, FIFOs, names not UTF-8 or too long) to REFUSED, named."""
    if not root.is_dir():
        raise BonedbError(f"{root}: no such folder")
    tops = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    with_subsets = bool(tops) and all(_norm(p.name) in SUBSET_NAMES for p in tops)
    pattern = compile_patient_pattern(patient_pattern)
    images: list[FolderImage] = []
    skipped: Counter = Counter()
    problems: list[Problem] = []
    refused = refused if refused is not None else []
    subset_dirs = [(SUBSET_NAMES[_norm(p.name)], p) for p in tops] if with_subsets else [("all", root)]
    for subset, subset_dir in subset_dirs:
        if not follow_symlinks and (problem := _escaping_folder(root, subset_dir)) is not None:
            problems.append(problem)
            continue
        for entry in sorted(subset_dir.iterdir()):
            if entry.is_file() or entry.is_symlink() and not entry.is_dir():
                skipped[_junk_reason(entry) or "file outside a label folder"] += 1
                continue
            if entry.name.startswith(".") or not entry.is_dir():
                continue
            label = label_map.get(_norm(entry.name))
            if label is None:
                problems.append(Problem(str(entry), None, f"unknown label folder {entry.name!r}: name its label "
                                        f"with --label-map '{entry.name}=1' or '{entry.name}=0'"))
                continue
            if not follow_symlinks and (problem := _escaping_folder(root, entry)) is not None:
                problems.append(problem)
                continue
            for folder, dirs, files in os.walk(entry):
                dirs.sort()
                for name in sorted(files):
                    full = Path(folder) / name
                    reason = _junk_reason(full)
                    if reason:
                        skipped[reason] += 1
                        if left_out is not None and full.suffix.lower() in IMAGE_SUFFIXES:
                            left_out.append((full.relative_to(root).as_posix(), reason))
                        continue
                    relative = full.relative_to(root).as_posix()
                    unstorable = _unstorable(root, full, relative, follow_symlinks)
                    if unstorable is not None:
                        why, recordable = unstorable
                        refused.append(f"refused {printable(full)}: {why}")
                        if left_out is not None and recordable:
                            left_out.append((relative, why))
                        continue
                    images.append(FolderImage(relative, subset, label, _patient(pattern, name, relative)))
    if problems:
        raise InputProblems(problems, f"{len(problems)} problem(s) in {root}; nothing was written")
    return images, skipped


def compile_patient_pattern(text: str | None) -> re.Pattern | None:
    """--patient-pattern compiled, or a one-line error saying where the expression is wrong."""
    if not text:
        return None
    try:
        return re.compile(text)
    except re.error as exc:
        raise BonedbError(f"--patient-pattern {text!r} is not a regular expression ({exc}): fix it, e.g. "
                          "'^(\\d+)_' for files named 123_left.png") from None


def _unstorable(root: Path, full: Path, relative: str, follow_symlinks: bool) -> tuple[str, bool] | None:
    """(why, whether the path can be recorded) for an image file that cannot become a row, or None: a name
    that is not UTF-8, a path longer than the column, a broken link, a FIFO, a symbolic link out of ROOT."""
    try:
        relative.encode("utf-8")
    except UnicodeEncodeError:
        return "its name is not UTF-8 (a name from another system's code page): rename it in UTF-8", False
    if len(relative) > PATH_LENGTH:
        return (f"its path below {root} has {len(relative)} characters; bonedb keeps at most {PATH_LENGTH}: "
                "shorten its folders' names"), False
    try:
        mode = full.stat().st_mode
    except FileNotFoundError:
        link = broken_link(full)
        if link is None:
            return "gone while bonedb read the folder: run it again", True
        return f"{link}: restore its target or remove it", True
    if not stat.S_ISREG(mode):  # reading a FIFO would block forever
        return "not a regular file (a FIFO, device or socket named like an image): remove it", True
    if not follow_symlinks and (real := outside(root, full)) is not None:
        return (f"a symbolic link to {printable(real)}, outside {root}: copy the file in, or pass --follow-symlinks "
                "to read it there"), True
    return None


def _escaping_folder(root: Path, folder: Path) -> Problem | None:
    real = outside(root, folder)
    if real is None:
        return None
    return Problem(printable(folder), None, f"a symbolic link to {printable(real)}, outside {root}: export and "
                   "training would read files beyond the dataset; copy the folder in, or pass --follow-symlinks")


def _junk_reason(path: Path) -> str | None:
    if path.name.lower() in JUNK_NAMES or path.name.startswith("."):
        return "system file"
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        return "not an image file"
    try:
        facts = path.stat()
    except OSError:  # a broken link: named by _unstorable, not counted as junk
        return None
    return "empty file" if stat.S_ISREG(facts.st_mode) and facts.st_size == 0 else None


def _patient(pattern: re.Pattern | None, name: str, relative: str) -> str:
    if pattern is not None:
        match = pattern.search(name)
        if match:
            key = match.groupdict().get("patient") or (match.group(1) if match.re.groups else match.group(0))
            return key[:64]
    # No patient id: one per image, stable across re-ingests because it comes from the path.
    return "img-" + hashlib.sha1(relative.encode()).hexdigest()[:16]


def ingest_folder(
    engine: Engine,
    root: Path,
    *,
    dataset: str,
    part: str | None = None,
    label_map: dict[str, int] | None = None,
    patient_pattern: str | None = None,
    follow_symlinks: bool = False,
    progress: ProgressFactory = silent,
    on_wait: Callable[[str], None] | None = None,
) -> FolderReport:
    """Read, check and write one class-folder tree as dataset DATASET. Options are checked before anything
    is logged (a mistyped option is not an ingest); every run that gets further leaves a row in the log."""
    if part is not None and part not in BODY_PARTS:
        raise BonedbError(f"unknown body part {part!r}: choose from {', '.join(BODY_PARTS)}, or leave it out")
    check_name("dataset", dataset, "--dataset")
    compile_patient_pattern(patient_pattern)
    root = Path(check_root(Path(root).expanduser().resolve()))
    label_map = label_map or DEFAULT_LABELS
    extra_labels = {name: value for name, value in label_map.items() if DEFAULT_LABELS.get(name) != value}
    record = IngestRecord("ingest-folder", dataset, str(root),
                          {"part": part, "label_map": extra_labels, "patient_pattern": patient_pattern,
                           **({"follow_symlinks": True} if follow_symlinks else {})})
    # One ingest at a time per database: a second one waits (and says so) rather than colliding.
    with paused_gc(), on_interrupt(NOTHING_WRITTEN), exclusive(engine, "ingest", on_wait=on_wait), \
            logged_if_unapplied(engine, record):
        return _ingest(engine, root, dataset, part, label_map, patient_pattern, follow_symlinks, progress, record)


def _ingest(engine, root: Path, dataset, part, label_map, patient_pattern, follow_symlinks, progress,
            record: IngestRecord) -> FolderReport:
    left_out: list[tuple[str, str]] = []
    refused: list[str] = []
    images, skipped = scan(root, label_map, patient_pattern, left_out, follow_symlinks=follow_symlinks,
                           refused=refused)
    report = FolderReport(dataset, str(root), skipped=dict(skipped), bad_images=refused)
    with progress(len(images), "Reading images") as advance:
        checks = inspect_files(root, [i.path for i in images], advance, confined=not follow_symlinks)
    good = []
    for image, check in zip(images, checks):
        if check.facts is None:
            report.bad_images.append(check.error)
            report.unreadable += 1
            left_out.append((image.path, check.beside_path))
        elif check.facts.file_format not in TRAINABLE_FORMATS:
            why = (f"{check.facts.file_format} content in a {Path(image.path).suffix} file: training reads "
                   f"{', '.join(sorted(TRAINABLE_FORMATS))}; convert it (e.g. to PNG) to include it")
            report.refused_formats.append(f"{image.path}: {why}")
            left_out.append((image.path, why))
        else:
            good.append((image, check.facts))
    if not good:
        bad = report.bad_images + report.refused_formats
        named = f"{len(bad)} left out, e.g. {bad[0]}; " if bad else ""
        raise BonedbError(f"{root}: no readable images under label folders ({named}skipped: "
                          f"{describe_left_out(report.left_out)})")
    record.source_sha256 = {"listing": _listing_hash(good)}
    record.counts.rows_skipped = sum(skipped.values()) + len(report.bad_images) + len(report.refused_formats)
    with engine.begin() as conn:
        existing = conn.execute(select(Dataset.id, Dataset.kind).where(Dataset.name == dataset)).first()
        if existing is not None:
            report.review_conflicts = _check_same(conn, existing, dataset, good, record.counts)
            report.unchanged = True
        else:
            patients = len({image.patient for image, _ in good})
            record.counts = IngestCounts(patients_added=patients, studies_added=len(good), images_added=len(good),
                                         rows_skipped=record.counts.rows_skipped)
            # Logged first: the source's own split pins its labels at this ingest's label version.
            report.ingest_id = log_applied(conn, record)
            _write(conn, dataset, root, part or UNKNOWN_PART, good, report, left_out)
    report.images = len(good)
    report.patients = len({image.patient for image, _ in good})
    counts = Counter(f"{image.subset}/{image.label}" for image, _ in good)
    report.per_subset_label = dict(sorted(counts.items()))
    return report


def _listing_hash(good) -> str:
    """sha256 over the sorted (path, content hash, label) of every readable image: the tree's fingerprint."""
    digest = hashlib.sha256()
    for line in sorted(f"{image.path}\t{facts.content_hash}\t{image.label}\n" for image, facts in good):
        digest.update(line.encode())
    return digest.hexdigest()


def _check_same(conn, existing, dataset: str, good, counts: IngestCounts) -> list[str]:
    """Re-ingesting the same tree is a no-op; a changed tree goes under a new name. A label a steward decided
    since is no change of the tree: the decision stands, and where the folder disagrees with it, the
    disagreement is returned in words (review conflicts)."""
    if existing.kind != "folder":
        raise BonedbError(f"dataset {dataset!r} is a {existing.kind} dataset: pass another --dataset name")
    rows = conn.execute(
        select(Image.path, Image.content_hash, Study.label, Study.id)
        .join(Study, Study.id == Image.study_id).where(Image.dataset_id == existing.id)
    ).all()
    reviewed = reviewed_labels(conn, [row.id for row in rows])
    said = {image.path: image.label for image, _ in good}
    stored, conflicts = set(), []
    for path, content_hash, label, study_id in rows:
        decision = reviewed.get(study_id)
        if decision is not None and path in said:
            if said[path] != decision.label:
                conflicts.append(f"{path}: the folder says {said[path]} ({label_word(said[path])}), a review by "
                                 f"{decision.reviewer} (ingest log {decision.log_id}) decided {decision.label} "
                                 f"({label_word(decision.label)}); the decision stands (to take the folder's "
                                 "label, decide again with `bonedb labels set`)")
            label = said[path]  # the folder's word on a decided study is no change of the tree
        stored.add((path, content_hash, label))
    found = {(image.path, facts.content_hash, image.label) for image, facts in good}
    if stored != found:
        counts.images_added, counts.images_unchanged = len(found - stored), len(found & stored)
        raise BonedbError(
            f"dataset {dataset!r} already holds a different version of this folder "
            f"({len(found - stored)} new or changed, {len(stored - found)} gone): ingest it under a new --dataset name"
        )
    return conflicts


def _write(conn, dataset: str, root: Path, part: str, good, report: FolderReport,
           left_out: Sequence[tuple[str, str]] = ()) -> None:
    dataset_id = inserted_id(conn.execute(
        insert(Dataset.__table__).values(name=dataset, root=str(root), kind="folder")
    ))
    # What was seen and left out on purpose, with why: `audit dataset` tells these from unknown files.
    record_exclusions(conn, dataset_id, list(left_out))
    patients = sorted({image.patient for image, _ in good})
    insert_rows(conn, Patient.__table__, ("dataset_id", "patient_key"), [(dataset_id, p) for p in patients])
    patient_ids = dict(conn.execute(
        select(Patient.patient_key, Patient.id).where(Patient.dataset_id == dataset_id)).all())
    # One study per image (the source says nothing of studies), numbered per patient in path order.
    numbers: Counter = Counter()
    study_rows, keys = [], []
    for image, _ in good:
        numbers[image.patient] += 1
        keys.append((patient_ids[image.patient], numbers[image.patient]))
        study_rows.append((dataset_id, patient_ids[image.patient], part, image.subset,
                           numbers[image.patient], image.label))
    insert_rows(conn, Study.__table__,
                ("dataset_id", "patient_id", "body_part", "source_split", "study_number", "label"), study_rows)
    study_ids = {(r.patient_id, r.study_number): r.id for r in conn.execute(
        select(Study.patient_id, Study.study_number, Study.id).where(Study.dataset_id == dataset_id))}
    insert_rows(
        conn, Image.__table__,
        ("dataset_id", "study_id", "path", "image_number", "file_size", "width", "height",
         "content_hash", "perceptual_hash", "near_hash", "file_format", "picture_signature"),
        [(dataset_id, study_ids[key], image.path, 1, f.file_size, f.width, f.height, f.content_hash,
          f.perceptual_hash, f.near_hash, f.file_format, f.picture_signature) for (image, f), key in zip(good, keys)],
    )
    report.duplicate_groups = len(regroup(conn, dataset_id))
    if any(image.subset != "all" for image, _ in good):
        records = load_records(conn, dataset_id, (part,))
        subset_of = {image.path: image.subset for image, _ in good}
        assignment = {r.image_id: subset_of[r.path] for r in records}
        parameters = {"source": "subset folders", "root": str(root)}
        store_assignment(conn, dataset, dataset_id, "source", parameters, None, records, assignment,
                         refuse_leaks=False)
        report.source_split = dataset
        report.source_split_leaks = len(group_overlaps(
            [(r.patient, assignment[r.image_id], r.path) for r in records], []))
        # The same file in several subsets leaks as surely as a shared patient, and is common in published sets.
        report.source_split_identical_files = len(exact_duplicates(
            [(facts.content_hash, image.subset, image.path) for image, facts in good]))
