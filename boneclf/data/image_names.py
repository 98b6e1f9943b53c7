"""Names for files made from X-rays: exported images, Grad-CAM overlays, report captions.

A known dataset image is named after what it is: for MURA its body part, patient, study and image
(MURA's own names for them), for a folder set the file's own path (its patients and studies are
bonedb's inventions, the file name is the source's). Any other file is named after itself. A
picture never takes the name of a file already there.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, select

from boneclf.files import safe_name
from boneclf.store.queries import ImageIdentity, SplitImage, source_stem
from boneclf.store.schema import Dataset, Image, Patient, Study

_CHUNK = 500  # paths per IN (...) query


def identify_images(engine: Engine, paths: list[str | Path]) -> dict[str, ImageIdentity]:
    """The known dataset images among PATHS (files under a dataset's root that have a row in images),
    keyed by the path as given."""
    with engine.connect() as conn:
        datasets = conn.execute(select(Dataset.id, Dataset.name, Dataset.root, Dataset.kind)).all()
        wanted: dict[int, dict[str, str]] = {}  # dataset id -> {path relative to its root: path as given}
        for given in paths:
            path = Path(given).resolve()
            for dataset_id, _name, root, _kind in datasets:
                if path.is_relative_to(Path(root).resolve()):
                    wanted.setdefault(dataset_id, {})[path.relative_to(Path(root).resolve()).as_posix()] = str(given)
        names = {dataset_id: (name, kind) for dataset_id, name, _root, kind in datasets}
        found: dict[str, ImageIdentity] = {}
        for dataset_id, relative in wanted.items():
            keys = sorted(relative)
            for start in range(0, len(keys), _CHUNK):
                rows = conn.execute(
                    select(Image.path, Study.body_part, Patient.patient_key, Study.study_number, Image.image_number)
                    .join(Study, Study.id == Image.study_id)
                    .join(Patient, Patient.id == Study.patient_id)
                    .where(Image.dataset_id == dataset_id, Image.path.in_(keys[start:start + _CHUNK]))
                )
                name, kind = names[dataset_id]
                for stored, part, patient, study, image in rows:
                    found[relative[stored]] = ImageIdentity(name, part, patient, study, image, stored, kind)
    return found


def picture_name(path: str | Path, identity: ImageIdentity | None, suffix: str = "_gradcam.png") -> str:
    """The file name for a picture made from PATH: after its identity when known, else after the file."""
    return (identity.name if identity is not None else safe_name(Path(path).stem)) + suffix


def export_name(image: SplitImage, kind: str) -> str:
    """The file name an exported image gets (its folders say subset and class): MURA's as
    `humerus_patient11186_study1_image2.png`, a folder set's after its source path, e.g.
    `train_fractured_IMG_0001.jpg`; the extension in lower case."""
    suffix = Path(image.path).suffix.lower()
    if kind == "folder":
        return f"{source_stem(image.path)}{suffix}"
    return (f"{image.part}_patient{safe_name(image.patient)}_study{image.study_number}_image{image.image_number}"
            f"{suffix}")


def free_path(folder: Path, filename: str) -> Path:
    """FOLDER/FILENAME, or with -2, -3, ... before the extension when that file exists: never overwrite."""
    target = folder / filename
    extension = Path(filename).suffix  # the last one: dataset names hold dots ("mura-v1.1")
    stem = filename[: len(filename) - len(extension)]
    number = 1
    while target.exists():
        number += 1
        target = folder / f"{stem}-{number}{extension}"
    return target
