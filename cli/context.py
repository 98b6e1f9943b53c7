"""What every command gets from the top-level group: the database, opened on first use."""

from __future__ import annotations

from functools import cached_property

import click
from sqlalchemy import Engine

from boneclf.store import open_database
from boneclf.store.engine import make_engine, mask_url, resolve_url


class Database:
    """The database URL (masked whenever shown) and engines on demand.

    `engine` checks the schema once, when a command first needs it, and never creates a SQLite
    file: read-only commands in the wrong folder say so instead of leaving an empty database.
    """

    def __init__(self, url: str | None):
        self.url = resolve_url(url)
        self.explicit = url is not None

    @cached_property
    def engine(self) -> Engine:
        return open_database(self.url)

    def bare_engine(self, *, create: bool = False) -> Engine:
        """An engine without the schema check, for `bonedb db` itself."""
        return make_engine(self.url, create=create)

    @property
    def masked_url(self) -> str:
        return mask_url(self.url)


pass_db = click.make_pass_decorator(Database)
