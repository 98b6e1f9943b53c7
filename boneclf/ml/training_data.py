"""What a training stage sees of a split: examples per subset, class names, per-part class weights."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from sqlalchemy import Engine

from boneclf.errors import BonedbError
from boneclf.store.queries import dataset_root, get_split, split_images

from .pipeline import Examples

STAGES = ("bodypart", "fracture")
FRACTURE_CLASSES = ["normal", "abnormal"]


@dataclass
class StageData:
    split: object  # the split_versions row
    class_names: list[str]
    subsets: dict[str, Examples]


def load_stage_data(engine: Engine, split_name: str, stage: str, parts: tuple[str, ...] | None) -> StageData:
    if stage not in STAGES:
        raise BonedbError(f"--stage {stage!r}: choose bodypart or fracture")
    with engine.connect() as conn:
        split = get_split(conn, split_name)
        root = dataset_root(conn, split.dataset_id)
        rows = split_images(conn, split.id)
    available = sorted({r.part for r in rows})
    chosen = sorted(parts) if parts else available
    missing = sorted(set(chosen) - set(available))
    if missing:
        raise BonedbError(f"split {split_name!r} has no images of {', '.join(missing)} (it has {', '.join(available)})")
    rows = [r for r in rows if r.part in chosen]
    class_names = chosen if stage == "bodypart" else FRACTURE_CLASSES
    if stage == "bodypart" and len(chosen) < 2:
        raise BonedbError("--stage bodypart needs at least two body parts to tell apart")
    subsets = {}
    for subset in ("train", "val", "test"):
        picked = [r for r in rows if r.subset == subset]
        subsets[subset] = Examples(
            image_ids=[r.image_id for r in picked],
            paths=[str(root / r.path) for r in picked],
            labels=[chosen.index(r.part) if stage == "bodypart" else r.label for r in picked],
            studies=[r.study_key for r in picked],
            parts=[r.part for r in picked],
        )
    train_classes = Counter(subsets["train"].labels)
    if len(train_classes) < 2:
        only = class_names[next(iter(train_classes))] if train_classes else "no images"
        raise BonedbError(f"split {split_name!r} gives the {stage} stage only one class to learn ({only}) for "
                          f"{', '.join(chosen)}: choose other parts or another split")
    if not len(subsets["val"]):
        raise BonedbError(f"split {split_name!r} has no validation images: create a split with --val above 0")
    return StageData(split, class_names, subsets)


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
    if stage != "fracture":
        return [1.0] * len(examples)
    weights = part_class_weights(examples)
    return [weights[p][y] for p, y in zip(examples.parts, examples.labels)]
