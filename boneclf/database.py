"""Where the database is, how to connect to it, and how to talk about it without leaking passwords."""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from .errors import BonedbError

ENV_VAR = "BONEDB_DATABASE_URL"
DEFAULT_SQLITE_FILE = "bonedb.sqlite"


def resolve_url(url: str | None = None, cwd: Path | None = None) -> str:
    """The URL to use: the explicit one, else $BONEDB_DATABASE_URL, else a SQLite file in cwd."""
    if url:
        return url
    if os.environ.get(ENV_VAR):
        return os.environ[ENV_VAR]
    path = (cwd or Path.cwd()) / DEFAULT_SQLITE_FILE
    return f"sqlite:///{path}"


def mask_url(url: str) -> str:
    """The URL with its password replaced by ***, safe to print or log."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparseable database URL>"


def scrub(text: str, url: str) -> str:
    """Remove the URL's password from any text (driver errors sometimes echo it)."""
    try:
        password = make_url(url).password
    except ArgumentError:
        return text
    if password:
        text = text.replace(str(password), "***")
    return text


def make_engine(url: str) -> Engine:
    """An engine for `url`, with SQLite set up to enforce foreign keys like MySQL does."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise BonedbError(
            f"cannot parse database URL {mask_url(url)!r}: use e.g. "
            "mysql+pymysql://user:password@host:3306/bonedb or sqlite:///bonedb.sqlite"
        ) from exc
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(parsed)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    if parsed.get_backend_name() == "mysql":
        # utf8mb4 so that any path a dataset holds round-trips; pool_pre_ping survives server restarts.
        query = dict(parsed.query)
        query.setdefault("charset", "utf8mb4")
        return create_engine(parsed.set(query=query), pool_pre_ping=True)
    raise BonedbError(
        f"unsupported database {parsed.get_backend_name()!r} in {mask_url(url)}: "
        "bonedb supports MySQL/MariaDB (mysql+pymysql://) and SQLite (sqlite:///)"
    )
