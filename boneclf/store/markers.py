"""The marker boxes stored per image (table `marker_boxes`) and which detector examined each image."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple

from sqlalchemy import Connection, bindparam, delete, func, select, update

from .bulk import insert_rows
from .schema import Image, Marker


class StoredBox(NamedTuple):
    """A marker box in the picture's own pixels (x, y: its top-left corner)."""

    x: int
    y: int
    width: int
    height: int
    kind: str


def save_markers(conn: Connection, found: Mapping[int, Sequence[StoredBox]], method: str) -> None:
    """Replace the boxes of each image in FOUND (image id -> its boxes, none for a clean image) and record
    that METHOD examined it."""
    if not found:
        return
    ids = sorted(found)
    for start in range(0, len(ids), 1000):  # bounded IN lists
        conn.execute(delete(Marker).where(Marker.image_id.in_(ids[start:start + 1000])))
    insert_rows(conn, Marker.__table__, ("image_id", "x", "y", "width", "height", "kind"),
                [(image_id, *box) for image_id in ids for box in found[image_id]])
    conn.execute(update(Image).where(Image.id == bindparam("b_id")).values(markers_method=method)
                 .execution_options(synchronize_session=False),
                 [{"b_id": image_id} for image_id in ids])


def markers_of(conn: Connection, image_ids: Iterable[int]) -> dict[int, list[StoredBox]]:
    """The stored boxes of each image asked for that has any (an image absent has none, or was not examined)."""
    ids = sorted(set(image_ids))
    boxes: dict[int, list[StoredBox]] = defaultdict(list)
    for start in range(0, len(ids), 1000):
        rows = conn.execute(select(Marker.image_id, Marker.x, Marker.y, Marker.width, Marker.height, Marker.kind)
                            .where(Marker.image_id.in_(ids[start:start + 1000])).order_by(Marker.id))
        for image_id, x, y, width, height, kind in rows:
            boxes[image_id].append(StoredBox(x, y, width, height, kind))
    return dict(boxes)


class MarkerCounts(NamedTuple):
    images: int  # of the dataset
    examined: int  # by the current method
    with_markers: int  # examined images with at least one box
    boxes: int


def marker_counts(conn: Connection, dataset_id: int, method: str) -> MarkerCounts:
    images = conn.scalar(select(func.count()).select_from(Image).where(Image.dataset_id == dataset_id)) or 0
    examined = conn.scalar(select(func.count()).select_from(Image)
                           .where(Image.dataset_id == dataset_id, Image.markers_method == method)) or 0
    with_markers, boxes = conn.execute(
        select(func.count(func.distinct(Marker.image_id)), func.count(Marker.id))
        .join(Image, Image.id == Marker.image_id)
        .where(Image.dataset_id == dataset_id, Image.markers_method == method)).one()
    return MarkerCounts(images, examined, with_markers or 0, boxes or 0)
