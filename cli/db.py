"""`bonedb db`: schema migrations."""

from __future__ import annotations

import click

from boneclf.store import migrate

from .context import Database, pass_db
from .options import confirmer, json_option, yes_option
from .output import emit


@click.group()
def db():
    """Create or update the database schema (Alembic migrations).

    \b
    Example:
      bonedb db upgrade
    """


@db.command()
@click.option("--revision", default="head", show_default=True, help="Migrate up to this revision.")
@json_option
@pass_db
def upgrade(database: Database, revision, json_mode):
    """Apply migrations; the only way bonedb creates tables (and the SQLite file, or the MySQL database:
    CHARACTER SET utf8mb4, when the user may create databases; else it prints the statement to run).

    \b
    Example:
      bonedb --database-url mysql+pymysql://bonedb:PASSWORD@127.0.0.1:3306/bonedb db upgrade
    """
    change = migrate.upgrade(database.bare_engine(create=True), revision, create=True)

    def human(c):
        if c.created:
            click.echo(f"created database {c.created}")
        if c.before == c.after:
            click.echo(f"{c.database}: already at {c.after}")
        else:
            click.echo(f"{c.database}: upgraded {c.before or '(empty)'} -> {c.after}")

    emit(change, json_mode, human)


@db.command()
@click.argument("revision")
@yes_option("dropping tables and their data")
@json_option
@pass_db
def downgrade(database: Database, revision, yes, json_mode):
    """Revert migrations down to REVISION ('base' removes every bonedb table and view, with all data).
    Asks first on a terminal; elsewhere needs --yes.

    \b
    Example:
      bonedb db downgrade 0003
    """
    change = migrate.downgrade(database.bare_engine(), revision, confirm=confirmer(yes))
    emit(change, json_mode,
         lambda c: click.echo(f"{c.database}: downgraded {c.before or '(empty)'} -> {c.after or '(empty)'}"))


@db.command()
@json_option
@pass_db
def current(database: Database, json_mode):
    """Show the schema revision of the database and the latest one bonedb knows.

    \b
    Example:
      bonedb db current --json
    """
    state = migrate.state(database.bare_engine())

    def human(s):
        advice = "up to date" if s.at_head else "run `bonedb db upgrade`"
        click.echo(f"{s.database}: {s.current or '(empty)'} (head {s.head}, {advice})")

    emit(state, json_mode, human)
