"""Image flags: warnings stored beside an image. Today one, "identity in pixels", which exports leave out
unless asked for, `audit dataset` lists, and `serve` shows (`flags_of` is what a page asks for)."""

from __future__ import annotations

from typing import NamedTuple

from sqlalchemy import Connection, select

from boneclf.clock import utc_now

from .bulk import insert_rows
from .schema import Image, ImageFlag

# The image may show a patient's identity in its pixels (burned-in text): DICOM's BurnedInAnnotation YES,
# or text found in the picture.
IDENTITY_IN_PIXELS = "identity in pixels"
FLAG_WORDS = {IDENTITY_IN_PIXELS: "may show identity in pixels"}

_flags = ImageFlag.__table__


class Flag(NamedTuple):
    flag: str
    reason: str

    def describe(self) -> str:
        """For people, e.g. `may show identity in pixels (BurnedInAnnotation YES)`."""
        return f"{FLAG_WORDS.get(self.flag, self.flag)} ({self.reason})"


def add_flags(conn: Connection, rows: list[tuple[int, str, str]]) -> None:
    """Store (image id, flag, reason) rows not stored yet."""
    if not rows:
        return
    ids = sorted({image_id for image_id, _, _ in rows})
    have = set(conn.execute(select(_flags.c.image_id, _flags.c.flag).where(_flags.c.image_id.in_(ids))).all())
    now = utc_now()
    insert_rows(conn, _flags, ("image_id", "flag", "reason", "created_at"),
                [(i, f, r[:255], now) for i, f, r in sorted(set(rows)) if (i, f) not in have])


def flags_of(conn: Connection, image_ids) -> dict[int, list[Flag]]:
    """image id -> its flags, for the ids that have any."""
    ids = sorted(set(image_ids))
    found: dict[int, list[Flag]] = {}
    for start in range(0, len(ids), 500):  # bounded IN lists
        rows = conn.execute(select(_flags.c.image_id, _flags.c.flag, _flags.c.reason)
                            .where(_flags.c.image_id.in_(ids[start:start + 500])).order_by(_flags.c.flag))
        for image_id, flag, reason in rows:
            found.setdefault(image_id, []).append(Flag(flag, reason))
    return found


def flagged_in_dataset(conn: Connection, dataset_id: int, flag: str = IDENTITY_IN_PIXELS) -> dict[int, Flag]:
    """image id -> its FLAG, for every image of the dataset that carries it."""
    rows = conn.execute(
        select(_flags.c.image_id, _flags.c.flag, _flags.c.reason)
        .join(Image, Image.id == _flags.c.image_id)
        .where(Image.dataset_id == dataset_id, _flags.c.flag == flag)
    )
    return {image_id: Flag(name, reason) for image_id, name, reason in rows}
