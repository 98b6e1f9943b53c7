"""`bonedb export`: a split as class-directory trees (or TFRecord shards), built atomically.

The tree is built in a hidden sibling folder and renamed into place, so OUT is either the old
export, the new one, or absent: never half-written. Everything written is a function of the
split and the options (sorted order, no timestamps), so the same export is the same bytes.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from sqlalchemy import Engine, select

from .errors import BonedbError
from .migrate import require_head
from .progress import ProgressFactory, silent
from .schema import Dataset, Image, Patient, SplitAssignment, Study
from .splits import SUBSETS, get_split

STAGES = ("bodypart", "fracture")
LINKS = ("hardlink", "symlink", "copy")
FORMATS = ("files", "tfrecord")
CLASS_NAMES = {0: "normal", 1: "fractured"}  # MURA's label: 1 = abnormal (fracture, hardware, ...)
MARKER_FILE = "split.json"
MANIFEST_FILE = "manifest.csv"
EXPORT_FORMAT_VERSION = 1
SHARD_SIZE = 1024


class Entry(NamedTuple):
    image_id: int
    source_path: str  # relative to the dataset root
    exported_path: str  # relative to OUT
    subset: str
    part: str
    label: int
    patient: str
    study: int


@dataclass
class ExportReport:
    out: str
    split: str
    stage: str
    link: str
    format: str
    images: int = 0
    per_subset: dict[str, int] = field(default_factory=dict)
    copied_instead_of_linked: int = 0
    replaced_previous: bool = False


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", text)


def export_split(
    engine: Engine,
    name: str,
    out: Path,
    *,
    stage: str = "fracture",
    parts: tuple[str, ...] | None = None,
    combined: bool = False,
    link: str = "hardlink",
    fmt: str = "files",
    force: bool = False,
    progress: ProgressFactory = silent,
) -> ExportReport:
    if stage not in STAGES or link not in LINKS or fmt not in FORMATS:
        raise BonedbError(f"unknown --stage {stage!r}, --link {link!r} or --format {fmt!r}")
    require_head(engine)
    out = Path(out).absolute()
    split, root, entries = _plan(engine, name, stage, parts, combined, fmt)
    _check_target(out, force)

    report = ExportReport(str(out), name, stage, link, fmt, images=len(entries))
    for entry in entries:
        report.per_subset[entry.subset] = report.per_subset.get(entry.subset, 0) + 1
    partial = out.parent / f".{out.name}.bonedb-partial-{os.getpid()}"
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    try:
        if fmt == "files":
            report.copied_instead_of_linked = _write_files(partial, root, entries, link, progress)
        else:
            from .tfrecords import write_shards  # TensorFlow loads only when asked for

            entries = write_shards(partial, root, entries, stage, SHARD_SIZE, progress)
        _write_manifest(partial, entries)
        _write_marker(partial, split, stage, combined, link, fmt, parts)
        report.replaced_previous = _swap_into_place(partial, out)
    finally:
        if partial.exists():
            shutil.rmtree(partial, ignore_errors=True)
    return report


def _plan(engine, name, stage, parts, combined, fmt):
    with engine.connect() as conn:
        split = get_split(conn, name)
        root = conn.execute(select(Dataset.root).where(Dataset.id == split.dataset_id)).scalar_one()
        rows = conn.execute(
            select(Image.id, Image.path, SplitAssignment.subset, Study.body_part, Study.label,
                   Patient.patient_key, Study.study_number, Image.image_number)
            .join(Image, Image.id == SplitAssignment.image_id)
            .join(Study, Study.id == Image.study_id)
            .join(Patient, Patient.id == Study.patient_id)
            .where(SplitAssignment.split_id == split.id)
        ).all()
    available = {row.body_part for row in rows}
    if parts:
        missing = sorted(set(parts) - available)
        if missing:
            raise BonedbError(f"split {name!r} has no images of {', '.join(missing)} "
                              f"(it has {', '.join(sorted(available))})")
        rows = [row for row in rows if row.body_part in parts]
    if stage == "bodypart" and "unknown" in available:
        raise BonedbError(f"split {name!r} has images of unknown body part: --stage bodypart needs known parts")
    entries = []
    for image_id, path, subset, part, label, patient, study, number in rows:
        filename = f"{part}_patient{_safe(patient)}_study{study}_image{number}{Path(path).suffix.lower()}"
        if fmt == "tfrecord":
            target = subset  # replaced by the shard path when written
        elif stage == "bodypart":
            target = f"{subset}/{part}/{filename}"
        elif combined:
            target = f"{subset}/{CLASS_NAMES[label]}/{filename}"
        else:
            target = f"{part}/{subset}/{CLASS_NAMES[label]}/{filename}"
        entries.append(Entry(image_id, path, target, subset, part, label, patient, study))
    entries.sort(key=lambda e: (SUBSETS.index(e.subset), e.exported_path, e.source_path))
    if fmt == "files" and len({e.exported_path for e in entries}) != len(entries):
        raise BonedbError(f"split {name!r}: two images would get the same exported name; report this as a bug")
    return split, Path(root), entries


def _check_target(out: Path, force: bool) -> None:
    if not out.exists():
        return
    if not out.is_dir():
        raise BonedbError(f"{out} exists and is not a folder: choose another OUT")
    if not any(out.iterdir()):
        return
    if not is_export(out):
        raise BonedbError(f"{out} is not empty and not a bonedb export: choose a new or empty folder")
    if not force:
        raise BonedbError(f"{out} holds a previous bonedb export: pass --force to replace it")


def is_export(folder: Path) -> bool:
    try:
        return json.loads((folder / MARKER_FILE).read_text()).get("bonedb_export") is not None
    except (OSError, ValueError, AttributeError):
        return False


def _write_files(partial: Path, root: Path, entries: list[Entry], link: str, progress) -> int:
    copied = 0
    made: set[Path] = set()
    with progress(len(entries), "Exporting images") as advance:
        for entry in entries:
            source = root / entry.source_path
            target = partial / entry.exported_path
            if target.parent not in made:
                target.parent.mkdir(parents=True, exist_ok=True)
                made.add(target.parent)
            if not source.is_file():
                raise BonedbError(f"{source}: missing (image {entry.image_id}); restore it, or find every "
                                  "missing file with `bonedb audit dataset`; nothing was exported")
            copied += _place(source, target, link)
            advance(1)
    return copied


def _place(source: Path, target: Path, link: str) -> int:
    """Link or copy one file; returns 1 when a hard link had to become a copy."""
    if link == "symlink":
        os.symlink(source, target)
        return 0
    if link == "hardlink":
        try:
            os.link(source, target)
            return 0
        except OSError as exc:
            # Across filesystems (EXDEV) or where links are not allowed, copy instead.
            if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                raise
    shutil.copyfile(source, target)
    return 1 if link == "hardlink" else 0


def _write_manifest(partial: Path, entries: list[Entry]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["image_id", "source_path", "exported_path", "subset", "part", "label", "patient", "study"])
    for e in entries:
        writer.writerow([e.image_id, e.source_path, e.exported_path, e.subset, e.part, e.label, e.patient, e.study])
    (partial / MANIFEST_FILE).write_text(buffer.getvalue(), encoding="utf-8")


def _write_marker(partial: Path, split, stage, combined, link, fmt, parts) -> None:
    marker = {
        "bonedb_export": EXPORT_FORMAT_VERSION,
        "split": split.name,
        "split_kind": split.kind,
        "parameters": json.loads(split.parameters),
        "content_hash": split.content_hash,
        "stage": stage,
        "combined": combined,
        "parts": sorted(parts) if parts else None,
        "link": link,
        "format": fmt,
        "labels": {"0": "normal", "1": "abnormal (MURA: fracture, hardware or another finding)"},
    }
    (partial / MARKER_FILE).write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _swap_into_place(partial: Path, out: Path) -> bool:
    """Rename the finished tree onto OUT; a previous export is moved aside first, then removed."""
    previous = None
    if out.exists():
        if any(out.iterdir()):
            previous = out.parent / f".{out.name}.bonedb-old-{os.getpid()}"
            out.rename(previous)
        else:
            out.rmdir()
    try:
        partial.rename(out)
    except OSError:
        if previous is not None:
            previous.rename(out)  # put the old export back
        raise
    if previous is not None:
        shutil.rmtree(previous, ignore_errors=True)
    return previous is not None
