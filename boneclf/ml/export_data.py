"""What a training stage sees of an export folder (class folders or TFRecord shards), with no database.

An export carries everything a run needs: manifest.csv (every image with its subset, part, pinned label,
patient and study) and split.json (split name, content hash, label version, and for decoded shards the
image spec). The examples are built as load_stage_data builds them from the database, so both paths
train on the same labels and score studies the same way.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from boneclf.data.export import MANIFEST_FILE, MARKER_FILE
from boneclf.errors import BonedbError
from boneclf.vocabulary import BODYPART, FRACTURE_CLASSES, STAGES

from .pipeline import Examples
from .training_data import StageData, check_learnable


@dataclass(frozen=True)
class ExportedSplit:
    """The split an export was made from, as split.json names it (stands in for the database row)."""

    name: str
    content_hash: str
    label_version: int | None
    kind: str | None = None


@dataclass(frozen=True)
class ExportSource:
    folder: Path
    format: str  # files | tfrecord
    stored_spec: dict | None  # decoded shards: size, pad, canny; else None (file bytes)
    shards: dict[str, list[str]]  # tfrecord: shard files per subset, relative to folder

    def to_dict(self) -> dict:
        return {"folder": str(self.folder), "format": self.format, "image_spec": self.stored_spec}


def read_marker(folder: Path) -> dict:
    path = Path(folder) / MARKER_FILE
    try:
        marker = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BonedbError(f"{path}: missing; {folder} is not a bonedb export (make one with `bonedb export`)") from None
    except (OSError, ValueError) as exc:
        raise BonedbError(f"{path}: not readable JSON ({exc}); export the split again") from None
    if not isinstance(marker, dict) or marker.get("bonedb_export") is None:
        raise BonedbError(f"{path}: not a bonedb export marker; export the split again")
    return marker


def load_export_stage_data(folder: Path, stage: str, parts: tuple[str, ...] | None) -> StageData:
    """The export's examples for a stage (its pinned labels), like load_stage_data from the database."""
    if stage not in STAGES:
        raise BonedbError(f"--stage {stage!r}: choose bodypart or fracture")
    folder = Path(folder).absolute()
    marker = read_marker(folder)
    rows = _manifest(folder)
    fmt = marker.get("format", "files")
    available = sorted({r["part"] for r in rows})
    chosen = sorted(parts) if parts else available
    missing = sorted(set(chosen) - set(available))
    if missing:
        raise BonedbError(f"export {folder} has no images of {', '.join(missing)} (it has {', '.join(available)})")
    if stage == BODYPART and len(chosen) < 2:
        raise BonedbError("--stage bodypart needs at least two body parts to tell apart")
    rows = [r for r in rows if r["part"] in chosen]
    class_names = chosen if stage == BODYPART else FRACTURE_CLASSES
    subsets = {}
    for subset in ("train", "val", "test"):
        picked = [r for r in rows if r["subset"] == subset]
        subsets[subset] = Examples(
            image_ids=[int(r["image_id"]) for r in picked],
            # class folders: the exported file; shards: its record address (shard#index), for messages
            paths=[str(folder / r["exported_path"]) for r in picked],
            labels=[chosen.index(r["part"]) if stage == BODYPART else int(r["label"]) for r in picked],
            studies=[f"{r['patient']}/{r['part']}/{r['study']}" for r in picked],
            parts=[r["part"] for r in picked],
        )
    split = ExportedSplit(marker["split"], marker["content_hash"], marker.get("label_version"),
                          marker.get("split_kind"))
    check_learnable(subsets, class_names, stage, chosen, source=f"export {folder}", other="export another split",
                    val_remedy="export a split made with --val above 0")
    source = ExportSource(folder, fmt, marker.get("image_spec"), marker.get("shards") or {})
    return StageData(split, class_names, subsets, "pinned", split.label_version, None, export=source)


_COLUMNS = ("image_id", "exported_path", "subset", "part", "label", "patient", "study")


def _manifest(folder: Path) -> list[dict]:
    path = folder / MANIFEST_FILE
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in _COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise BonedbError(f"{path}: line 1 lacks the column(s) {', '.join(missing)}; export the split again")
            rows = list(reader)
    except FileNotFoundError:
        raise BonedbError(f"{path}: missing; export the split again") from None
    for line, row in enumerate(rows, start=2):
        if row["subset"] not in ("train", "val", "test") or not row["image_id"].isdigit() \
                or row["label"] not in ("0", "1"):
            raise BonedbError(f"{path}: line {line} is not a manifest row bonedb wrote; export the split again")
    return rows
