"""What a training stage sees of a split: examples per subset, class names, per-part class weights.

Stage 2 reads the labels the split pinned when it was made (so a run is reproducible from its
split alone), or on request today's labels of the same studies.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import Engine

from boneclf.errors import BonedbError
from boneclf.store.flags import flagged_in_dataset
from boneclf.store.provenance import LabelChanges, label_changes, label_version
from boneclf.store.queries import SplitRecord, dataset_root, get_split, split_images
from boneclf.vocabulary import BODYPART, FRACTURE, FRACTURE_CLASSES, STAGES

from .pipeline import Examples

if TYPE_CHECKING:
    from .export_data import ExportedSplit, ExportSource

LABEL_SOURCES = ("pinned", "current")


@dataclass
class StageData:
    # The split as stored, or (read from an export folder) the split the export names: both have
    # name, content_hash and label_version; only the stored one has id and dataset_id.
    split: SplitRecord | ExportedSplit
    class_names: list[str]
    subsets: dict[str, Examples]
    labels: str = "pinned"  # which labels the examples carry: the split's pinned ones or today's
    label_version: int | None = None  # of those labels (see boneclf.store.provenance)
    label_changes: LabelChanges | None = None  # stage 2: pinned labels that differ from today's
    export: ExportSource | None = None  # read from an export folder instead of the database
    # Images flagged as maybe showing identity in their pixels, left out as export leaves them out: a model
    # should not be trained (or scored) on pictures a steward has not cleared to leave the archive.
    flagged_left_out: int = 0

    def stored_split(self) -> SplitRecord:
        """The split as the database holds it (for what only a stored split has: its id, its dataset)."""
        if not isinstance(self.split, SplitRecord):
            raise BonedbError(f"split {self.split.name!r} was read from an export folder, not from a database")
        return self.split


def load_stage_data(engine: Engine, split_name: str, stage: str, parts: tuple[str, ...] | None, *,
                    labels: str = "pinned", changes_in: str | None = None) -> StageData:
    """The split's examples for a stage. `labels`: pinned or current; `changes_in`: count label changes
    in this subset only (evaluation), else in all of them."""
    if stage not in STAGES:
        raise BonedbError(f"--stage {stage!r}: choose bodypart or fracture")
    if labels not in LABEL_SOURCES:
        raise BonedbError(f"--labels {labels!r}: choose pinned or current")
    with engine.connect() as conn:
        split = get_split(conn, split_name)
        root = dataset_root(conn, split.dataset_id)
        rows = split_images(conn, split.id)
        available = sorted({r.part for r in rows})
        chosen = sorted(parts) if parts else available
        changes = label_changes(conn, split, parts=chosen, subset=changes_in) if stage == FRACTURE else None
        version = split.label_version if labels == "pinned" else label_version(conn, split.dataset_id)
        flagged = flagged_in_dataset(conn, split.dataset_id)
    missing = sorted(set(chosen) - set(available))
    if missing:
        raise BonedbError(f"split {split_name!r} has no images of {', '.join(missing)} (it has {', '.join(available)})")
    if labels == "current" and changes is not None and changes.images_removed:
        raise BonedbError(
            f"split {split_name!r} lost {changes.images_removed} image(s), removed from its dataset since it was "
            "made, so today's labels cannot score it as made: use its pinned labels (the default), or re-base it "
            f"with `bonedb split create NEW --from {split_name}`"
        )
    rows = [r for r in rows if r.part in chosen]
    kept = [r for r in rows if r.image_id not in flagged]
    rows, left_out = kept, len(rows) - len(kept)
    class_names = chosen if stage == BODYPART else FRACTURE_CLASSES
    if stage == BODYPART and len(chosen) < 2:
        raise BonedbError("--stage bodypart needs at least two body parts to tell apart")
    subsets = {}
    for subset in ("train", "val", "test"):
        picked = [r for r in rows if r.subset == subset]
        subsets[subset] = Examples(
            image_ids=[r.image_id for r in picked],
            paths=[str(root / r.path) for r in picked],
            labels=[chosen.index(r.part) if stage == BODYPART else
                    (r.label if labels == "pinned" else r.current_label) for r in picked],
            studies=[r.study_key for r in picked],
            parts=[r.part for r in picked],
            hashes=[r.content_hash for r in picked],
        )
    check_learnable(subsets, class_names, stage, chosen, source=f"split {split_name!r}", other="another split",
                    val_remedy="create a split with --val above 0")
    return StageData(split, class_names, subsets, labels, version, changes, flagged_left_out=left_out)


def check_learnable(subsets: dict[str, Examples], class_names: list[str], stage: str, chosen: list[str], *,
                    source: str, other: str, val_remedy: str) -> None:
    """Refuse before training what cannot train: one class in train, or no validation images. SOURCE names
    where the examples came from (a split, an export folder); OTHER and VAL_REMEDY say what to use instead."""
    train_classes = Counter(subsets["train"].labels)
    if len(train_classes) < 2:
        only = class_names[next(iter(train_classes))] if train_classes else "no images"
        raise BonedbError(f"{source} gives the {stage} stage only one class to learn ({only}) for "
                          f"{', '.join(chosen)}: choose other parts or {other}")
    if not len(subsets["val"]):
        raise BonedbError(f"{source} has no validation images: {val_remedy}")


def part_class_weights(examples: Examples) -> dict[str, dict[int, float]]:
    """MURA's baseline weighting, per body part: w(abnormal) = N/(A+N), w(normal) = A/(A+N)."""
    weights = {}
    for part in sorted(set(examples.parts)):
        labels = [y for y, p in zip(examples.labels, examples.parts) if p == part]
        abnormal = sum(labels)
        total = len(labels)
        if abnormal in (0, total):  # one class only: the formula would zero it out
            weights[part] = {0: 1.0, 1: 1.0}
            continue
        # Scaled by 2 so that a balanced part gets weight 1 for both classes.
        weights[part] = {1: 2 * (total - abnormal) / total, 0: 2 * abnormal / total}
    return weights


def sample_weights(examples: Examples, stage: str) -> list[float]:
    if stage != FRACTURE:
        return [1.0] * len(examples)
    weights = part_class_weights(examples)
    return [weights[p][y] for p, y in zip(examples.parts, examples.labels)]
