"""Names for pictures made from X-rays (Grad-CAM overlays, report captions).

A known dataset image is named after what it is (dataset, body part, patient, study, image); any
other file after its own name. A picture never takes the name of a file already there.
"""

from __future__ import annotations

import re
from pathlib import Path

from sqlalchemy import Engine, select

from boneclf.store.queries import ImageIdentity
from boneclf.store.schema import Dataset, Image, Patient, Study

_CHUNK = 500  # paths per IN (...) query


def identify_images(engine: Engine, paths: list[str | Path]) -> dict[str, ImageIdentity]:
    """The known dataset images among PATHS (files under a dataset's root that have a row in images),
    keyed by the path as given."""
    with engine.connect() as conn:
        datasets = conn.execute(select(Dataset.id, Dataset.name, Dataset.root)).all()
        wanted: dict[int, dict[str, str]] = {}  # dataset id -> {path relative to its root: path as given}
        for given in paths:
            path = Path(given).resolve()
            for dataset_id, _name, root in datasets:
                if path.is_relative_to(Path(root).resolve()):
                    wanted.setdefault(dataset_id, {})[path.relative_to(Path(root).resolve()).as_posix()] = str(given)
        names = {dataset_id: name for dataset_id, name, _root in datasets}
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
                for path, part, patient, study, image in rows:
                    found[relative[path]] = ImageIdentity(names[dataset_id], part, patient, study, image)
    return found


def picture_name(path: str | Path, identity: ImageIdentity | None, suffix: str = "_gradcam.png") -> str:
    """The file name for a picture made from PATH: after its identity when known, else after the file."""
    return (identity.name if identity is not None else _safe(Path(path).stem)) + suffix


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


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", text)
