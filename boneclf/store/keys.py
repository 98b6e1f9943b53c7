"""The key the database gave a row just inserted."""

from __future__ import annotations

from typing import Any

from sqlalchemy import CursorResult


def inserted_id(result: CursorResult[Any]) -> int:
    """The id of the one row an `insert(table).values(...)` wrote (every table here has a single integer key).

    SQLAlchemy types `inserted_primary_key` as optional: it is None only for a statement that wrote several rows
    at once, which no caller of this does."""
    key = result.inserted_primary_key
    if key is None:
        raise TypeError("inserted_id: the statement did not insert a single row")
    return key[0]
