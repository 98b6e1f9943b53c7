"""`bonedb audit`: leaks in a split; drift between a dataset on disk and the database."""

from __future__ import annotations

import sys

import click

from boneclf.data.audit import DatasetAudit, SplitAudit, audit_dataset, audit_split
from boneclf.results import plural

from .context import Database, pass_db
from .options import json_option
from .output import emit, progress_for

SHOWN = 20  # findings listed per kind on screen; --json lists all


@click.group()
def audit():
    """Check a split for leakage, or a dataset's files against the database. Exit 1 when anything is found.

    \b
    Example:
      bonedb audit split hs-v1
    """


@audit.command("split")
@click.argument("name")
@json_option
@pass_db
def split_(database: Database, name, json_mode):
    """Patients, studies, identical files and duplicate groups shared by subsets of split NAME. Copies of
    one picture are judged as `split create` judges them (the dataset's duplicate groups, computed first
    for images ingested without --verify). Also says, in one line, when labels changed since the split
    was made. Exits 1 when something leaks.

    \b
    Example:
      bonedb audit split hs-v1
    """
    report = audit_split(database.engine, name, progress=progress_for(json_mode))
    emit(report, json_mode, _human_split)
    if report.leaks:
        sys.exit(1)


def _human_split(report: SplitAudit) -> None:
    click.echo(f"split {report.split!r}: {plural(report.images, 'image')}")
    if report.label_changes is not None and report.label_changes.changed:
        click.echo(f"note: {report.label_changes.describe()}; not a leak: `bonedb split create NEW --from "
                   f"{report.split}` re-bases it on today's labels")
    _section("patients or studies in several subsets", report.overlaps,
             lambda f: f"{f['kind']} {f['key']} in {', '.join(f['subsets'])}: " + "; ".join(f["paths"][:4]))
    _section("identical files in several subsets", report.exact_duplicates,
             lambda f: f"{', '.join(f['subsets'])}: " + "; ".join(f["paths"][:4]))
    if report.grouped_now:
        click.echo("note: images never examined for copies were hashed and the duplicate groups computed now")
    _section("duplicate groups (the same picture turned, flipped, cropped, re-encoded) across subsets",
             report.duplicate_groups,
             lambda f: f"group {f['key']} in {', '.join(f['subsets'])}: " + "; ".join(f["paths"][:4]))
    for subset, copies in sorted(report.within_subset_copies.items()):
        click.echo(f"within {subset}: {plural(copies, 'redundant identical copy', 'redundant identical copies')} "
                   "(not a leak; `split create --dedupe` keeps one of each)")
    for problem in report.unhashed[:SHOWN]:
        click.echo(f"not hashed: {problem}")
    click.echo("LEAKS FOUND" if report.leaks else "no leaks found")


@audit.command("dataset")
@click.argument("name")
@click.option("--quick", is_flag=True, help="Compare file sizes only; do not re-hash.")
@json_option
@pass_db
def dataset_(database: Database, name, quick, json_mode):
    """Files on disk against the database: missing, unexpected, changed since ingest. Files an ingest
    left out on purpose (empty, undecodable, a format training cannot read) are listed with their
    reason apart from files nobody ever saw, and do not make it exit 1. Images flagged as maybe
    showing identity in their pixels (ingest-dicom) are listed for a steward too.

    \b
    Example:
      bonedb audit dataset mura-v1.1 --quick
    """
    report = audit_dataset(database.engine, name, quick=quick, progress=progress_for(json_mode))
    emit(report, json_mode, _human_dataset)
    if not report.clean:
        sys.exit(1)


def _human_dataset(report: DatasetAudit) -> None:
    click.echo(f"dataset {report.dataset!r} at {report.root}: {plural(report.images, 'image')} in the database")
    for title, items in (("missing on disk", report.missing), ("on disk, not in the database", report.unexpected),
                         ("changed since ingest", report.changed), ("unreadable", report.unreadable)):
        _section(title, items, str)
    _section("left out by ingest on purpose (not a problem)", report.left_out, str)
    _section("may show identity in pixels (export and training leave them out)", report.flagged, str)
    if not report.clean:
        click.echo("PROBLEMS FOUND")
    else:  # flagged images are for a steward to look at, not files out of step with the database
        click.echo("files match the database" + (f" ({plural(len(report.flagged), 'flagged image')} listed above)"
                                                 if report.flagged else ""))


def _section(title: str, items: list, line) -> None:
    if not items:
        return
    click.echo(f"{title}: {len(items)}")
    for item in items[:SHOWN]:
        click.echo(f"  {line(item)}")
    if len(items) > SHOWN:
        click.echo(f"  ... and {len(items) - SHOWN} more (--json lists all)")
