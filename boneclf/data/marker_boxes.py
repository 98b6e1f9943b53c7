"""`bonedb markers compute`: examine a dataset's images for burned-in markers and store their boxes.

Images already examined by the current detector (`markers.METHOD`) are skipped unless asked to redo
them; `ingest --verify` examines the images it reads as it ingests them (verify.inspect_file).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from sqlalchemy import Connection, Engine, or_, select

from boneclf.errors import BonedbError
from boneclf.progress import ProgressFactory, silent
from boneclf.results import Result
from boneclf.store.markers import StoredBox, marker_counts, markers_of, save_markers
from boneclf.store.queries import dataset_id_of, dataset_root
from boneclf.store.schema import Image, Marker

from .markers import METHOD, MarkerBox, find_markers
from .pixels import open_image
from .verify import read_regular

BATCH = 200  # images examined between two writes: an interrupted run keeps what it finished


@dataclass
class MarkersResult(Result):
    dataset: str
    method: str
    images: int
    examined_now: int
    examined: int  # by this method, in all
    with_markers: int
    boxes: int
    unreadable: list[str] = field(default_factory=list)


def stored(box: MarkerBox) -> StoredBox:
    return StoredBox(box.x, box.y, box.width, box.height, box.kind)


def save_found_markers(conn: Connection, dataset_id: int, found: Mapping[str, Sequence[MarkerBox]]) -> None:
    """Store the boxes found on the dataset's images (by path, as an ingest read them), in the caller's
    transaction."""
    ids = dict(conn.execute(select(Image.path, Image.id).where(Image.dataset_id == dataset_id)).all())
    save_markers(conn, {ids[path]: [stored(box) for box in boxes] for path, boxes in found.items() if path in ids},
                 METHOD)


def markers_in_bytes(data: bytes) -> list[MarkerBox]:
    """The marker boxes of an encoded image (within the pixel limit; BonedbError or OSError otherwise)."""
    with open_image(data) as image:
        return find_markers(np.asarray(image.convert("L")))


def compute_markers(engine: Engine, dataset: str, *, again: bool = False,
                    progress: ProgressFactory = silent) -> MarkersResult:
    """Examine DATASET's images not yet examined by the current detector (every image with AGAIN) and store
    their boxes, BATCH images per transaction."""
    with engine.connect() as conn:
        dataset_id = dataset_id_of(conn, dataset)
        root = dataset_root(conn, dataset_id)
        query = select(Image.id, Image.path).where(Image.dataset_id == dataset_id).order_by(Image.id)
        if not again:
            query = query.where(or_(Image.markers_method.is_(None), Image.markers_method != METHOD))
        todo = conn.execute(query).all()
    unreadable: list[str] = []

    def examine(path: str) -> list[MarkerBox] | str:
        try:
            return markers_in_bytes(read_regular(root / path))
        except (BonedbError, OSError, ValueError, SyntaxError) as exc:
            return f"{root / path}: {exc}"

    workers = min(4, os.cpu_count() or 1)
    with progress(len(todo), "finding markers") as advance, ThreadPoolExecutor(workers) as pool, \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow's palette warnings would tear the progress bar
        for start in range(0, len(todo), BATCH):
            batch = todo[start:start + BATCH]
            found: dict[int, list[StoredBox]] = {}
            for (image_id, _), boxes in zip(batch, pool.map(examine, [path for _, path in batch])):
                if isinstance(boxes, str):
                    unreadable.append(boxes)
                else:
                    found[image_id] = [stored(box) for box in boxes]
                advance(1)
            with engine.begin() as conn:
                save_markers(conn, found, METHOD)
    with engine.connect() as conn:
        counts = marker_counts(conn, dataset_id, METHOD)
    return MarkersResult(dataset, METHOD, counts.images, len(todo) - len(unreadable), counts.examined,
                         counts.with_markers, counts.boxes, unreadable)


@dataclass
class ImageMarkers(Result):
    image_id: int
    path: str
    boxes: list[dict]


def list_markers(engine: Engine, dataset: str, limit: int = 50, offset: int = 0) -> list[ImageMarkers]:
    """A page of the dataset's images that carry markers, with their boxes."""
    with engine.connect() as conn:
        dataset_id = dataset_id_of(conn, dataset)
        rows = conn.execute(select(Image.id, Image.path).where(
            Image.dataset_id == dataset_id, Image.id.in_(select(Marker.image_id)))
            .order_by(Image.id).limit(limit).offset(offset)).all()
        boxes = markers_of(conn, [image_id for image_id, _ in rows])
    return [ImageMarkers(image_id, path, [box._asdict() for box in boxes.get(image_id, [])]) for image_id, path in rows]
