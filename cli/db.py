"""`bonedb db`: schema migrations."""

from __future__ import annotations

import click

from boneclf import migrate
from cli.main import cli
from cli.output import print_json


@cli.group()
def db():
    """Create or update the database schema (Alembic migrations)."""


@db.command()
@click.option("--revision", default="head", show_default=True, help="Migrate up to this revision.")
@click.option("--json", "json_mode", is_flag=True, help="Print the result as JSON.")
@click.pass_obj
def upgrade(obj, revision, json_mode):
    """Apply migrations; the only way bonedb creates tables.

    Example: bonedb --database-url mysql+pymysql://bonedb:bonedb@127.0.0.1:3306/bonedb db upgrade
    """
    before, after = migrate.upgrade(obj.engine, revision)
    if json_mode:
        print_json({"database": obj.masked_url, "before": before, "after": after})
    elif before == after:
        click.echo(f"{obj.masked_url}: already at {after}")
    else:
        click.echo(f"{obj.masked_url}: upgraded {before or '(empty)'} -> {after}")


@db.command()
@click.argument("revision")
@click.pass_obj
def downgrade(obj, revision):
    """Revert migrations down to REVISION ('base' removes every bonedb table and view).

    Example: bonedb db downgrade base
    """
    before, after = migrate.downgrade(obj.engine, revision)
    click.echo(f"{obj.masked_url}: downgraded {before or '(empty)'} -> {after or '(empty)'}")


@db.command()
@click.option("--json", "json_mode", is_flag=True, help="Print the result as JSON.")
@click.pass_obj
def current(obj, json_mode):
    """Show the schema revision of the database and the latest one bonedb knows.

    Example: bonedb db current
    """
    current_rev, head = migrate.current_revision(obj.engine), migrate.head_revision()
    if json_mode:
        print_json({"database": obj.masked_url, "current": current_rev, "head": head, "at_head": current_rev == head})
        return
    state = "up to date" if current_rev == head else "run `bonedb db upgrade`"
    click.echo(f"{obj.masked_url}: {current_rev or '(empty)'} (head {head}, {state})")
