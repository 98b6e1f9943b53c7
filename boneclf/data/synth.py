"""`bonedb synth`: a synthetic dataset in MURA v1.1's exact layout, CSV quirks included.

Structure follows the real data (see shared MURA.md): several studies and views per patient,
some patients with studies of more than one body part, studies numbered per patient and part,
train and valid patient-disjoint, no header rows, CRLF image-path files and LF label files.
Deterministic for a seed: every image draws from its own generator seeded by its path.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from boneclf.errors import BonedbError
from boneclf.files import AtomicTree
from boneclf.progress import ProgressFactory, silent
from boneclf.results import Result
from boneclf.vocabulary import BODY_PARTS

from .mura_reader import DEFAULT_DATASET_DIR
from .radiograph import draw_radiograph

# Relative frequency of each part among MURA's images (train set), so the mix looks like MURA's.
PART_WEIGHTS = {
    "elbow": 4931, "finger": 5106, "forearm": 1825, "hand": 5543,
    "humerus": 1272, "shoulder": 8379, "wrist": 9752,
}
_PARTS_PER_PATIENT = ((1, 0.87), (2, 0.11), (3, 0.02))
_STUDIES_PER_PART = ((1, 0.94), (2, 0.05), (3, 0.01))
_VIEWS_PER_STUDY = ((1, 0.13), (2, 0.31), (3, 0.33), (4, 0.17), (5, 0.06))
_RGB_RATE = 0.05  # a few real MURA PNGs are stored as RGB
# In MURA-v1.1/, beside the CSVs: says the pictures were drawn, so that ingest marks the dataset
# synthetic, and that synth may replace this folder (never a real download).
SYNTH_MARKER = "bonedb-synth.json"


@dataclass(frozen=True)
class SynthImage:
    path: str  # relative to OUT, starting with MURA-v1.1/
    split: str
    part: str
    patient: str
    study: int
    image: int
    label: int


@dataclass
class SynthCounts(Result):
    out: str
    images: int
    studies: int
    patients: int
    multi_part_patients: int
    images_per_split: dict[str, int]
    images_per_part: dict[str, int]
    positive_images: int


@dataclass
class SynthReport:
    out: str
    images: list[SynthImage] = field(default_factory=list)

    def counts(self) -> SynthCounts:
        studies = {(i.split, i.part, i.patient, i.study) for i in self.images}
        parts_of: dict[str, set[str]] = {}
        for i in self.images:
            parts_of.setdefault(i.patient, set()).add(i.part)
        return SynthCounts(
            out=self.out,
            images=len(self.images),
            studies=len(studies),
            patients=len(parts_of),
            multi_part_patients=sum(1 for parts in parts_of.values() if len(parts) > 1),
            images_per_split=dict(Counter(i.split for i in self.images)),
            images_per_part=dict(sorted(Counter(i.part for i in self.images).items())),
            positive_images=sum(i.label for i in self.images),
        )


def _pick(rng: random.Random, table) -> int:
    values, weights = zip(*table)
    return rng.choices(values, weights)[0]


def plan_dataset(
    patients: int, parts=BODY_PARTS, positive_rate: float = 0.4, seed: int = 0, valid_fraction: float = 0.1
) -> list[SynthImage]:
    """The list of images a synthetic MURA holds, without drawing any."""
    if patients < 2:
        raise BonedbError("--patients must be at least 2 so that train and valid both get a patient")
    if not 0.0 <= positive_rate <= 1.0:
        raise BonedbError(f"--positive-rate {positive_rate} must be between 0 and 1")
    rng = random.Random(seed)
    parts = sorted(parts)
    n_valid = max(1, round(patients * valid_fraction))
    images: list[SynthImage] = []
    for index in range(patients):
        # Valid patients are numbered after train patients, as in MURA.
        split = "train" if index < patients - n_valid else "valid"
        patient = f"{index + 1:05d}"
        n_parts = min(len(parts), _pick(rng, _PARTS_PER_PATIENT))
        # The first patient of each split spans two parts, so every synth set has such patients.
        if index in (0, patients - n_valid) and len(parts) > 1:
            n_parts = max(n_parts, 2)
        chosen = _weighted_sample(rng, parts, n_parts)
        for part in sorted(chosen):
            for study in range(1, _pick(rng, _STUDIES_PER_PART) + 1):
                label = int(rng.random() < positive_rate)
                for image in range(1, _pick(rng, _VIEWS_PER_STUDY) + 1):
                    suffix = "positive" if label else "negative"
                    path = (
                        f"{DEFAULT_DATASET_DIR}/{split}/XR_{part.upper()}/patient{patient}/"
                        f"study{study}_{suffix}/image{image}.png"
                    )
                    images.append(SynthImage(path, split, part, patient, study, image, label))
    # MURA lists images grouped by part, then patient.
    images.sort(key=lambda i: (i.split, i.part, i.patient, i.study, i.image))
    return images


def _weighted_sample(rng: random.Random, parts: list[str], k: int) -> list[str]:
    pool, chosen = list(parts), []
    for _ in range(k):
        pick = rng.choices(pool, [PART_WEIGHTS[p] for p in pool])[0]
        chosen.append(pick)
        pool.remove(pick)
    return chosen


def write_csvs(out: Path, images: list[SynthImage]) -> None:
    _write_csvs(out / DEFAULT_DATASET_DIR, images)


def _write_csvs(folder: Path, images: list[SynthImage]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("train", "valid"):
        rows = [i for i in images if i.split == split]
        # newline="" keeps Python from translating: the real image-path files are CRLF, label files LF.
        with open(folder / f"{split}_image_paths.csv", "w", newline="", encoding="utf-8") as fh:
            fh.writelines(f"{i.path}\r\n" for i in rows)
        studies: dict[str, int] = {}
        for i in rows:
            studies.setdefault(i.path.rsplit("/", 1)[0] + "/", i.label)
        with open(folder / f"{split}_labeled_studies.csv", "w", newline="", encoding="utf-8") as fh:
            fh.writelines(f"{path},{label}\n" for path, label in studies.items())


def synth_mura(
    out: Path,
    *,
    patients: int = 60,
    parts=BODY_PARTS,
    size: int = 128,
    positive_rate: float = 0.4,
    seed: int = 0,
    write_images: bool = True,
    progress: ProgressFactory = silent,
) -> SynthReport:
    """Write the CSVs and (unless `write_images` is False) every PNG under `out`/MURA-v1.1, atomically:
    the folder is built beside its place and renamed into it, so an interrupted run or a full disk leaves
    nothing behind. A MURA-v1.1 folder already there is replaced only when synth made it."""
    if size < 32:
        raise BonedbError(f"--size {size} is too small to draw a bone: use 32 or more")
    out = Path(out)
    images = plan_dataset(patients, parts, positive_rate, seed)
    folder = out / DEFAULT_DATASET_DIR
    if folder.exists() and not (folder / SYNTH_MARKER).exists():
        raise BonedbError(f"{folder} exists and was not written by bonedb synth: choose another OUT, or move "
                          "that folder away first")
    with AtomicTree(folder) as partial:
        if write_images:
            with progress(len(images), "Drawing images") as advance:
                for image in images:
                    _save(_draw(image.path, image.part, bool(image.label), size, seed),
                          partial / image.path.split("/", 1)[1])
                    advance(1)
        _write_csvs(partial, images)
        _write_marker(partial, {"patients": patients, "parts": list(parts), "size": size,
                                "positive_rate": positive_rate, "seed": seed})
    return SynthReport(str(out), images)


def mark_synthetic(out: Path, settings: dict) -> None:
    """Leave SYNTH_MARKER beside OUT's CSVs: `bonedb ingest` then records the dataset as synthetic, and reports
    call it so."""
    _write_marker(Path(out) / DEFAULT_DATASET_DIR, settings)


def _write_marker(folder: Path, settings: dict) -> None:
    """SETTINGS (what drew the data) are written as they are, keys sorted: same settings, same bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    text = json.dumps({"drawn_by": "bonedb synth", **settings}, sort_keys=True, indent=1) + "\n"
    (folder / SYNTH_MARKER).write_text(text, encoding="utf-8")


def is_synthetic(dataset_dir: Path) -> bool:
    """Whether the MURA-layout folder DATASET_DIR (the one holding the CSVs) was drawn by `bonedb synth`."""
    return (Path(dataset_dir) / SYNTH_MARKER).is_file()


def _draw(path: str, part: str, abnormal: bool, size: int, seed: int):
    rng = random.Random(f"{seed}:{path}")
    # MURA images are mostly portrait; height is the long side.
    width = max(16, round(size * rng.uniform(0.72, 1.0)))
    picture, break_at = draw_radiograph(part, abnormal, width, size, rng)
    return picture, break_at, rng


def planted_break(path: str, size: int, seed: int) -> tuple[float, float] | None:
    """Where `synth_mura(..., size=SIZE, seed=SEED)` drew the break of the image at PATH (relative, as in
    the CSVs), in that image's pixels; None for a normal study. Drawn again: synth stores no locations."""
    folders = path.split("/")
    part = folders[-4].removeprefix("XR_").lower()
    abnormal = folders[-2].endswith("_positive")
    return _draw(path, part, abnormal, size, seed)[1]


def write_image(out: Path, image: SynthImage, size: int, seed: int) -> tuple[float, float] | None:
    return _save(_draw(image.path, image.part, bool(image.label), size, seed), out / image.path)


def _save(drawn, target: Path) -> tuple[float, float] | None:
    picture, break_at, rng = drawn
    if rng.random() < _RGB_RATE:
        picture = picture.convert("RGB")
    target.parent.mkdir(parents=True, exist_ok=True)
    picture.save(target, format="PNG")
    return break_at
