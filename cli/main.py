"""The `bonedb` command group: the database option, error handling, and the commands it holds."""

from __future__ import annotations

import errno
import os
import sys

# Importing bonedb's modules takes most of a second: a Ctrl-C then ends it as quietly as one later does.
try:
    import click
    from sqlalchemy.exc import SQLAlchemyError

    from boneclf import __version__
    from boneclf.errors import BonedbError, InputProblems, Interrupted
    from boneclf.store.engine import scrub

    from . import (
        audit,
        db,
        demo,
        duplicates,
        export,
        history,
        ingest,
        ingest_dicom,
        ingest_folder,
        labels,
        log,
        predict,
        report,
        runs,
        serve,
        split,
        stats,
        synth,
        train,
        tune,
    )
    from .context import Database
except (KeyboardInterrupt, RuntimeError) as exc:
    # Python 3.11 wraps a Ctrl-C that lands while a class is being made (__set_name__) in a RuntimeError.
    if isinstance(exc, RuntimeError) and not isinstance(exc.__cause__ or exc.__context__, KeyboardInterrupt):
        raise
    sys.stderr.write("interrupted\n")
    sys.exit(130)

MAX_PROBLEMS_SHOWN = 50


def _a_ctrl_c(exc: BaseException) -> bool:
    """Whether EXC is a Ctrl-C, or wraps one (see the imports above: lazily imported modules do it too)."""
    found: BaseException | None = exc
    for _ in range(10):  # a chain of causes is short; a loop in one must not hang the error handler
        if found is None:
            return False
        if isinstance(found, KeyboardInterrupt):
            return True
        found = found.__cause__ or found.__context__
    return False


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
            where = ctx.obj.masked_url if isinstance(ctx.obj, Database) else "the database"
            detail = str(getattr(exc, "orig", None) or exc).splitlines()[0]
            click.echo(f"error: database {where}: {_scrub(ctx, detail)}", err=True)
            sys.exit(1)
        except BrokenPipeError:
            # `bonedb stats | head -1`: the reader left; exit quietly as Unix tools do.
            _silence_stdout()
            sys.exit(141)
        except Interrupted as exc:  # Ctrl-C where the library knows what it left behind
            click.echo(f"interrupted: {exc.message}", err=True)
            sys.exit(130)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except (click.exceptions.Exit, click.ClickException, SystemExit):
            raise
        except OSError as exc:  # the file system said no (a full disk, a read-only folder): name the file
            if os.environ.get("BONEDB_DEBUG"):
                raise
            click.echo(f"error: {_describe_os_error(exc)}", err=True)
            sys.exit(1)
        except Exception as exc:  # a bug or an environment problem: one line, the traceback on request
            if _a_ctrl_c(exc):
                click.echo("interrupted", err=True)
                sys.exit(130)
            if os.environ.get("BONEDB_DEBUG"):
                raise
            first = (str(exc).strip().splitlines() or [""])[0][:300]
            click.echo(f"error: unexpected {type(exc).__name__}: {_scrub(ctx, first)} "
                       "(set BONEDB_DEBUG=1 to see the traceback)", err=True)
            sys.exit(1)


def _describe_os_error(exc: OSError) -> str:
    """One line: the file (when the error knows it), what the system said, and what to do about it."""
    where = f"{exc.filename}: " if exc.filename else ""
    if exc.filename2:
        where = f"{exc.filename} -> {exc.filename2}: "
    what = exc.strerror or str(exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"{where}{what}: free some space (or write elsewhere) and run the command again"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"{where}{what}: choose a folder you may write to"
    return f"{where}{what} (set BONEDB_DEBUG=1 to see the traceback)"


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that Python's flush at exit does not raise BrokenPipeError again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def _scrub(ctx, text: str) -> str:
    return scrub(text, ctx.obj.url) if isinstance(ctx.obj, Database) else text


@click.group(cls=BonedbGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--database-url",
    envvar="BONEDB_DATABASE_URL",
    metavar="URL",
    help="SQLAlchemy URL, e.g. mysql+pymysql://bonedb:PASSWORD@127.0.0.1:3306/bonedb. "
    "Default: $BONEDB_DATABASE_URL, else the SQLite file ./bonedb.sqlite.",
)
@click.version_option(__version__, prog_name="bonedb")
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
    ctx.obj = Database(database_url)


for _command in (
    db.db, synth.synth, ingest.ingest, ingest_folder.ingest_folder, ingest_dicom.ingest_dicom, log.log,
    history.history, labels.labels, stats.stats,
    split.split, duplicates.duplicates, export.export, audit.audit, train.train, train.weights, runs.runs,
    tune.tune, runs.evaluate, predict.predict, report.report, serve.serve, demo.demo,
):
    cli.add_command(_command)


def main() -> None:
    try:
        cli(prog_name="bonedb")
    except BrokenPipeError:  # raised while click itself writes (help, usage)
        _silence_stdout()
        sys.exit(141)
    except KeyboardInterrupt:  # while click parses the command line, before a command runs
        sys.stderr.write("interrupted\n")
        sys.exit(130)
