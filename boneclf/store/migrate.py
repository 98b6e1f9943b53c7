"""Schema management through Alembic: the only way bonedb creates or changes tables."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib import resources

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError

from boneclf.errors import BonedbError, SchemaNotAtHead
from boneclf.results import Result

from .engine import create_database, describe, unknown_database

MIGRATIONS_PACKAGE = "boneclf.migrations"


@dataclass
class SchemaChange(Result):
    database: str
    before: str | None
    after: str | None
    created: str | None = None  # the MySQL database `upgrade` created first, and where: said, not silent


@dataclass
class SchemaState(Result):
    database: str
    current: str | None
    head: str

    @property
    def at_head(self) -> bool:
        return self.current == self.head

    computed = ("at_head",)


def alembic_config() -> Config:
    """An Alembic config pointing at the migrations shipped inside the package."""
    config = Config()
    config.set_main_option("script_location", str(resources.files(MIGRATIONS_PACKAGE)))
    return config


@cache
def head_revision() -> str:
    """The newest revision; read from the scripts once per process (they do not change while it runs)."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:  # Alembic's answer for a folder without scripts: only a broken install ships none
        raise BonedbError(f"no migration scripts in {MIGRATIONS_PACKAGE}: reinstall bonedb")
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def state(engine: Engine) -> SchemaState:
    return SchemaState(describe(engine), current_revision(engine), head_revision())


def upgrade(engine: Engine, revision: str = "head", *, create: bool = False) -> SchemaChange:
    """Apply migrations up to `revision`. With `create`, a MySQL database the server lacks is created
    first (utf8mb4), or the error says what an administrator must run."""
    created = None
    try:
        before = current_revision(engine)
    except OperationalError as exc:
        if not (create and unknown_database(exc)):
            raise
        engine.dispose()
        if create_database(engine):
            created = f"`{engine.url.database}` (CHARACTER SET utf8mb4) on {engine.url.host}"
        before = current_revision(engine)
    _run(engine, command.upgrade, revision)
    return SchemaChange(describe(engine), before, current_revision(engine), created)


def downgrade(engine: Engine, revision: str, *, confirm: Callable[[str], bool] | None = None) -> SchemaChange:
    """Revert migrations down to `revision`, once `confirm(what)` agrees: downgrades drop data."""
    before = current_revision(engine)
    if before is not None and revision != before and confirm is not None:
        what = ("remove every bonedb table and view, with all datasets, splits, runs and evaluations,"
                if revision == "base" else f"undo the migrations after {revision}, dropping the tables and columns "
                "they added with their data,")
        if not confirm(f"{what} from {describe(engine)} (now at {before})"):
            raise BonedbError("not confirmed: the database is unchanged")
    _run(engine, command.downgrade, revision)
    return SchemaChange(describe(engine), before, current_revision(engine))


def revisions() -> list[str]:
    """Every revision, oldest first."""
    scripts = ScriptDirectory.from_config(alembic_config())
    return [script.revision for script in reversed(list(scripts.walk_revisions()))]


def _run(engine: Engine, action, revision: str) -> None:
    if revision not in ("head", "base", *revisions()):
        raise BonedbError(f"no schema revision {revision!r}: choose base, head or one of {', '.join(revisions())} "
                          "(`bonedb db current` shows where the database is)")
    config = alembic_config()
    with engine.connect() as conn:
        sqlite = conn.dialect.name == "sqlite"
        if sqlite:
            # SQLite cannot ALTER a column, so batch mode copies the table and drops the old one; with
            # foreign keys on, that DROP would cascade-delete every row referring to it. The pragma only
            # takes effect outside a transaction, hence before begin().
            conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
            conn.commit()
        try:
            with conn.begin():
                config.attributes["connection"] = conn
                try:
                    action(config, revision)
                except CommandError as exc:  # e.g. a downgrade "to" a revision above the current one
                    raise BonedbError(f"bonedb db: {exc} (`bonedb db current` shows where the database is)") from None
                if sqlite and conn.exec_driver_sql("PRAGMA foreign_key_check").first() is not None:
                    raise RuntimeError("a migration left rows whose foreign keys point nowhere; rolled back")
        finally:
            if sqlite:
                conn.exec_driver_sql("PRAGMA foreign_keys=ON")
                conn.commit()


def require_head(engine: Engine) -> None:
    """Refuse to work on a database whose schema is missing or out of date.

    Called once when a command opens the database (`open_database`), not by library functions.
    """
    current = current_revision(engine)
    head = head_revision()
    if current != head:
        what = "has no bonedb schema" if current is None else f"is at schema revision {current}"
        raise SchemaNotAtHead(f"database {describe(engine)} {what}, bonedb needs {head}: run `bonedb db upgrade`")
