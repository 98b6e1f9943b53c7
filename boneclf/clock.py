"""bonedb's one time source: naive UTC, as every timestamp column stores it."""

from __future__ import annotations

from datetime import datetime, timezone


def utc_now() -> datetime:
    """Now in UTC, without tzinfo: what the database stores and what `isoformat()` prints."""
    return datetime.now(timezone.utc).replace(tzinfo=None)
