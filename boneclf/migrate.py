"""Schema management through Alembic: the only way bonedb creates or changes tables."""

from __future__ import annotations

from importlib import resources

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from .errors import SchemaNotAtHead


def alembic_config() -> Config:
    """An Alembic config pointing at the migrations shipped in the `migrations` package."""
    config = Config()
    config.set_main_option("script_location", str(resources.files("migrations")))
    return config


def head_revision() -> str:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> tuple[str | None, str | None]:
    """Apply migrations up to `revision`; returns (before, after)."""
    before = current_revision(engine)
    _run(engine, command.upgrade, revision)
    return before, current_revision(engine)


def downgrade(engine: Engine, revision: str) -> tuple[str | None, str | None]:
    before = current_revision(engine)
    _run(engine, command.downgrade, revision)
    return before, current_revision(engine)


def _run(engine: Engine, action, revision: str) -> None:
    config = alembic_config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        action(config, revision)


def require_head(engine: Engine) -> None:
    """Refuse to work on a database whose schema is missing or out of date."""
    current = current_revision(engine)
    head = head_revision()
    if current != head:
        state = "has no bonedb schema" if current is None else f"is at schema revision {current}"
        raise SchemaNotAtHead(
            f"database {engine.url.render_as_string(hide_password=True)} {state}, "
            f"bonedb needs {head}: run `bonedb db upgrade`"
        )
