"""Which image formats training reads, and the record of files an ingest left out on purpose."""

from __future__ import annotations

from sqlalchemy import Connection, select

from boneclf.clock import utc_now
from boneclf.store.bulk import insert_rows
from boneclf.store.schema import IngestExclusion

# Formats as Pillow names them from the bytes (not the file name) that the training pipeline
# decodes (`ml.image_spec.decode_full`: PNG, JPEG, BMP, and GIF's first frame made gray).
TRAINABLE_FORMATS = {"PNG", "JPEG", "MPO", "GIF", "BMP"}


def record_exclusions(conn: Connection, dataset_id: int, left_out: list[tuple[str, str]]) -> None:
    """Store (path, reason) of files an ingest saw and left out, once per path, so that
    `audit dataset` tells them from files nobody ever saw."""
    if not left_out:
        return
    known = set(conn.execute(select(IngestExclusion.path).where(IngestExclusion.dataset_id == dataset_id)).scalars())
    rows, seen = [], set(known)
    for path, reason in sorted(left_out):
        if path[:512] not in seen:
            seen.add(path[:512])
            rows.append((dataset_id, path[:512], reason[:255], utc_now()))
    insert_rows(conn, IngestExclusion.__table__, ("dataset_id", "path", "reason", "created_at"), rows)
