"""The `bonedb` command group: the database option, error handling, and the subcommands."""

from __future__ import annotations

import os
import sys

import click
from sqlalchemy.exc import SQLAlchemyError

from boneclf.database import make_engine, mask_url, resolve_url, scrub
from boneclf.errors import BonedbError, InputProblems

MAX_PROBLEMS_SHOWN = 50


class Context:
    """What every subcommand needs: the database URL (masked when shown) and an engine on demand."""

    def __init__(self, url: str | None):
        self.url = resolve_url(url)
        self._engine = None

    @property
    def engine(self):
        if self._engine is None:
            self._engine = make_engine(self.url)
        return self._engine

    @property
    def masked_url(self) -> str:
        return mask_url(self.url)


class BonedbGroup(click.Group):
    """Turns library errors into one line each on stderr and exit status 1, never a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except InputProblems as exc:
            for problem in exc.problems[:MAX_PROBLEMS_SHOWN]:
                click.echo(f"error: {problem}", err=True)
            hidden = len(exc.problems) - MAX_PROBLEMS_SHOWN
            if hidden > 0:
                click.echo(f"error: ... and {hidden} more problem(s) (use --json to list all)", err=True)
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)
        except BonedbError as exc:
            click.echo(f"error: {_scrub(ctx, str(exc))}", err=True)
            sys.exit(1)
        except SQLAlchemyError as exc:
            obj = ctx.obj
            where = obj.masked_url if isinstance(obj, Context) else "the database"
            detail = str(getattr(exc, "orig", None) or exc).splitlines()[0]
            click.echo(f"error: database {where}: {_scrub(ctx, detail)}", err=True)
            sys.exit(1)
        except (click.exceptions.Exit, click.ClickException, KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:  # a bug or an environment problem: one line, the traceback on request
            if os.environ.get("BONEDB_DEBUG"):
                raise
            first = (str(exc).strip().splitlines() or [""])[0][:300]
            click.echo(f"error: unexpected {type(exc).__name__}: {_scrub(ctx, first)} "
                       "(set BONEDB_DEBUG=1 to see the traceback)", err=True)
            sys.exit(1)


def _scrub(ctx, text: str) -> str:
    obj = ctx.obj
    return scrub(text, obj.url) if isinstance(obj, Context) else text


@click.group(cls=BonedbGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--database-url",
    envvar="BONEDB_DATABASE_URL",
    metavar="URL",
    help="SQLAlchemy URL, e.g. mysql+pymysql://bonedb:PASSWORD@127.0.0.1:3306/bonedb. "
    "Default: $BONEDB_DATABASE_URL, else the SQLite file ./bonedb.sqlite.",
)
@click.version_option(package_name="bonedb")
@click.pass_context
def cli(ctx, database_url):
    """bonedb: MURA-style X-ray datasets in a database, leak-free splits, bone classifiers.

    \b
    Start here (no server needed, SQLite in the current folder):
      bonedb synth demo-data --patients 60
      bonedb db upgrade
      bonedb ingest demo-data
      bonedb stats
    """
    ctx.obj = Context(database_url)


def main():
    cli(prog_name="bonedb")


# Subcommand modules register themselves on `cli` when imported.
from cli import audit as _audit  # noqa: E402,F401
from cli import db as _db  # noqa: E402,F401
from cli import export as _export  # noqa: E402,F401
from cli import ingest as _ingest  # noqa: E402,F401
from cli import ingest_folder as _ingest_folder  # noqa: E402,F401
from cli import predict as _predict  # noqa: E402,F401
from cli import report as _report  # noqa: E402,F401
from cli import runs as _runs  # noqa: E402,F401
from cli import stats as _stats  # noqa: E402,F401
from cli import split as _split  # noqa: E402,F401
from cli import synth as _synth  # noqa: E402,F401
from cli import train as _train  # noqa: E402,F401
