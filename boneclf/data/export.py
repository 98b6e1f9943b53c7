"""`bonedb export`: a split as class-directory trees, built atomically.

The tree is built in a hidden sibling folder and renamed into place, so OUT is either the old
export, the new one, or absent: never half-written. Everything written is a function of the
split and the options (sorted order, no timestamps), so the same export is the same bytes.
TFRecord shards (`boneclf.ml.tfrecords`) reuse the planning, manifest and atomic swap here.
"""

from __future__ import annotations

import csv
import errno
import hashlib
import io
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from sqlalchemy import Engine

from boneclf.errors import BonedbError
from boneclf.files import AtomicTree, clear_stale_trees
from boneclf.progress import ProgressFactory, silent
from boneclf.results import Result, plural
from boneclf.store.flags import flagged_in_dataset
from boneclf.store.queries import SplitRecord, dataset_facts, dataset_root, get_split, split_images
from boneclf.vocabulary import BODYPART, EXPORT_CLASS_FOLDERS, FRACTURE, FRACTURE_CLASSES, STAGES

from .image_names import export_name
from .splits import SUBSETS

LINKS = ("hardlink", "symlink", "copy")
FORMATS = ("files", "tfrecord")  # tfrecord: boneclf.ml.tfrecords.export_shards
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
class ExportReport(Result):
    out: str
    split: str
    stage: str
    link: str
    format: str
    images: int = 0
    per_subset: dict[str, int] = field(default_factory=dict)
    copied_instead_of_linked: int = 0
    replaced_previous: bool = False
    flagged_left_out: int = 0  # images that may show identity in pixels, left out (--include-flagged keeps them)
    stale_removed: list[str] = field(default_factory=list)  # what interrupted exports had left beside OUT


def export_split(
    engine: Engine,
    name: str,
    out: Path,
    *,
    stage: str = FRACTURE,
    parts: tuple[str, ...] | None = None,
    combined: bool = False,
    link: str = "hardlink",
    force: bool = False,
    confirm: Callable[[str], bool] | None = None,
    progress: ProgressFactory = silent,
    include_flagged: bool = False,
) -> ExportReport:
    """Split NAME as class folders under OUT, with manifest.csv and split.json. Images flagged as maybe showing
    identity in their pixels are left out unless `include_flagged`."""
    if stage not in STAGES or link not in LINKS:
        raise BonedbError(f"unknown --stage {stage!r} or --link {link!r}")
    out = Path(out).absolute()
    split, root, entries = plan_export(engine, name, stage, parts, combined, "files", include_flagged)
    stale = check_target(out, force, confirm)
    report = new_report(out, name, stage, link, "files", entries)
    report.flagged_left_out = 0 if include_flagged else flagged_count(engine, name, parts)
    tree = AtomicTree(out)
    with tree as partial:
        report.copied_instead_of_linked = _write_files(partial, root, entries, link, progress)
        write_manifest(partial, entries)
        class_names = sorted({e.part for e in entries}) if stage == BODYPART else FRACTURE_CLASSES
        write_marker(partial, split, stage=stage, combined=combined, link=link, fmt="files", parts=parts,
                     extra={"class_names": class_names})
    report.replaced_previous, report.stale_removed = tree.replaced, stale + tree.stale_removed
    return report


def new_report(out: Path, name: str, stage: str, link: str, fmt: str, entries: list[Entry]) -> ExportReport:
    report = ExportReport(str(out), name, stage, link, fmt, images=len(entries))
    for entry in entries:
        report.per_subset[entry.subset] = report.per_subset.get(entry.subset, 0) + 1
    return report


def plan_export(engine: Engine, name: str, stage: str, parts, combined: bool, fmt: str,
                include_flagged: bool = False):
    """(split row, dataset root, entries in their final order) for exporting split NAME; images that may show
    identity in their pixels only when `include_flagged`."""
    with engine.connect() as conn:
        split = get_split(conn, name)
        root = dataset_root(conn, split.dataset_id)
        kind = dataset_facts(conn, split.dataset_id).kind
        rows = split_images(conn, split.id)
        flagged = {} if include_flagged else flagged_in_dataset(conn, split.dataset_id)
    available = {row.part for row in rows}
    if parts:
        missing = sorted(set(parts) - available)
        if missing:
            raise BonedbError(f"split {name!r} has no images of {', '.join(missing)} "
                              f"(it has {', '.join(sorted(available))})")
        rows = [row for row in rows if row.part in parts]
    rows = [row for row in rows if row.image_id not in flagged]
    if stage == BODYPART and "unknown" in available:
        raise BonedbError(f"split {name!r} has images of unknown body part: --stage bodypart needs known parts")
    entries = []
    for row in rows:
        filename = export_name(row, kind)
        if fmt == "tfrecord":
            target = row.subset  # replaced by the shard path when written
        elif stage == BODYPART:
            target = f"{row.subset}/{row.part}/{filename}"
        elif combined:
            target = f"{row.subset}/{EXPORT_CLASS_FOLDERS[row.label]}/{filename}"
        else:
            target = f"{row.part}/{row.subset}/{EXPORT_CLASS_FOLDERS[row.label]}/{filename}"
        entries.append(Entry(row.image_id, row.path, target, row.subset, row.part, row.label, row.patient,
                             row.study_number))
    if fmt == "files":
        entries = distinct_names(entries)
    entries.sort(key=lambda e: (SUBSETS.index(e.subset), e.exported_path, e.source_path))
    if fmt == "files" and len({e.exported_path for e in entries}) != len(entries):
        raise BonedbError(f"split {name!r}: two images would get the same exported name; report this as a bug")
    return split, root, entries


def flagged_count(engine: Engine, name: str, parts) -> int:
    """Images of split NAME (of PARTS, when given) flagged as maybe showing identity in their pixels."""
    with engine.connect() as conn:
        split = get_split(conn, name)
        flagged = flagged_in_dataset(conn, split.dataset_id)
        rows = split_images(conn, split.id) if flagged else []
    return sum(1 for row in rows if row.image_id in flagged and (not parts or row.part in parts))


def distinct_names(entries: list[Entry]) -> list[Entry]:
    """Entries whose exported paths collide (names made safe for file systems can meet: patients "a b" and
    "a_b" both become a_b) each get a short hash of their source path before the extension. The hash
    depends on the image alone, so the same split exports to the same names whatever else it holds;
    it lengthens until every name is distinct."""
    for digits in (8, 16, 40):
        counts: dict[str, int] = {}
        for entry in entries:
            counts[entry.exported_path] = counts.get(entry.exported_path, 0) + 1
        if all(n == 1 for n in counts.values()):
            break
        entries = [entry._replace(exported_path=_tagged(entry, digits)) if counts[entry.exported_path] > 1 else entry
                   for entry in entries]
    return entries


def _tagged(entry: Entry, digits: int) -> str:
    target = Path(entry.exported_path)
    tag = hashlib.sha1(entry.source_path.encode()).hexdigest()[:digits]
    return str(target.with_name(f"{target.stem}-{tag}{target.suffix}"))


def check_target(out: Path, force: bool, confirm: Callable[[str], bool] | None = None) -> list[str]:
    """Refuse an OUT that is not new, empty or a previous export; with `force`, replace a previous export
    only when every file in it is one its manifest lists, and once `confirm(what)` agrees.

    First clears what interrupted exports left beside OUT (files.clear_stale_trees: partial trees of
    processes that are gone); returns what it did, one line each."""
    stale = clear_stale_trees(out)
    try:
        _check_target(out, force, confirm)
    except BonedbError as exc:
        if not stale:
            raise
        raise BonedbError(f"{exc} (first, {'; '.join(stale)})") from None
    return stale


def _check_target(out: Path, force: bool, confirm: Callable[[str], bool] | None) -> None:
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
    files, strangers = _export_files(out)
    if strangers:
        shown = ", ".join(strangers[:5]) + (f" and {len(strangers) - 5} more" if len(strangers) > 5 else "")
        raise BonedbError(f"{out} holds {plural(len(strangers), 'file')} that bonedb's manifest does not list "
                          f"({shown}): --force replaces only an export's own files; move them out of {out}, "
                          "or choose another OUT")
    if confirm is not None and not confirm(f"replace the previous export at {out} ({plural(files, 'file')})"):
        raise BonedbError("not confirmed: nothing was exported")


def _export_files(out: Path) -> tuple[int, list[str]]:
    """(files in OUT, those that neither its manifest lists nor bonedb writes beside it)."""
    ours = {MANIFEST_FILE, MARKER_FILE}
    try:
        with open(out / MANIFEST_FILE, newline="", encoding="utf-8") as fh:
            ours |= {row["exported_path"].split("#")[0] for row in csv.DictReader(fh)}  # shard#record
    except (OSError, KeyError, csv.Error):
        pass  # no readable manifest: every file is a stranger, so nothing is removed
    found = sorted((Path(folder) / name).relative_to(out).as_posix()
                   for folder, _dirs, names in os.walk(out) for name in names)
    return len(found), [path for path in found if path not in ours]


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
                what = "not a regular file (a FIFO, device or socket)" if source.exists() else (
                    "a broken symbolic link" if source.is_symlink() else "missing")
                raise BonedbError(f"{source}: {what} (image {entry.image_id}); restore it, or find every "
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


def write_manifest(partial: Path, entries: list[Entry]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["image_id", "source_path", "exported_path", "subset", "part", "label", "patient", "study"])
    for e in entries:
        writer.writerow([e.image_id, e.source_path, e.exported_path, e.subset, e.part, e.label, e.patient, e.study])
    (partial / MANIFEST_FILE).write_text(buffer.getvalue(), encoding="utf-8")


def write_marker(partial: Path, split: SplitRecord, *, stage: str, combined: bool, link: str, fmt: str,
                 parts, extra: dict | None = None) -> None:
    marker = {
        "bonedb_export": EXPORT_FORMAT_VERSION,
        "split": split.name,
        "split_kind": split.kind,
        "parameters": split.parameters,
        "content_hash": split.content_hash,
        "label_version": split.label_version,  # labels are the split's pinned ones
        "stage": stage,
        "combined": combined,
        "parts": sorted(parts) if parts else None,
        "link": link,
        "format": fmt,
        "labels": {"0": "normal", "1": "abnormal (MURA: fracture, hardware or another finding)"},
        **(extra or {}),
    }
    (partial / MARKER_FILE).write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n", encoding="utf-8")
