"""`bonedb audit`: leaks in a split; drift between a dataset on disk and the database."""

from __future__ import annotations

import sys
from dataclasses import asdict

import click

from boneclf.audit import audit_dataset, audit_split
from boneclf.leakage import NEAR_DUPLICATE_BITS
from cli.main import cli
from cli.output import print_json, progress_for

SHOWN = 20  # findings listed per kind on screen; --json lists all


@cli.group()
def audit():
    """Check a split for leakage, or a dataset's files against the database. Exit 1 when anything is found."""


@audit.command("split")
@click.argument("name")
@click.option("--near-bits", default=NEAR_DUPLICATE_BITS, show_default=True,
              help="Perceptual-hash distance (of 256 bits) at or below which two images are near-duplicates.")
@click.option("--no-near", is_flag=True, help="Skip the near-duplicate search.")
@click.option("--json", "json_mode", is_flag=True)
@click.pass_obj
def split_(obj, name, near_bits, no_near, json_mode):
    """Patients, studies, identical files and near-duplicate images shared by subsets of split NAME.

    \b
    Example:
      bonedb audit split hs-v1
    """
    report = audit_split(obj.engine, name, near_bits=near_bits, near=not no_near, progress=progress_for(json_mode))
    if json_mode:
        print_json({**asdict(report), "leaks": report.leaks})
    else:
        click.echo(f"split {name!r}: {report.images} images")
        _section("patients or studies in several subsets", report.overlaps,
                 lambda f: f"{f['kind']} {f['key']} in {', '.join(f['subsets'])}: " + "; ".join(f["paths"][:4]))
        _section("identical files in several subsets", report.exact_duplicates,
                 lambda f: f"{', '.join(f['subsets'])}: " + "; ".join(f["paths"][:4]))
        _section(f"near-duplicate images across subsets (distance <= {near_bits} bits)", report.near_duplicates,
                 lambda f: f"distance {f['distance']}: " + " ~ ".join(f["paths"]))
        for problem in report.unhashed[:SHOWN]:
            click.echo(f"not hashed: {problem}")
        click.echo("LEAKS FOUND" if report.leaks else "no leaks found")
    if report.leaks:
        sys.exit(1)


@audit.command("dataset")
@click.argument("name")
@click.option("--quick", is_flag=True, help="Compare file sizes only; do not re-hash.")
@click.option("--json", "json_mode", is_flag=True)
@click.pass_obj
def dataset_(obj, name, quick, json_mode):
    """Files on disk against the database: missing, unexpected, changed since ingest.

    \b
    Example:
      bonedb audit dataset mura-v1.1 --quick
    """
    report = audit_dataset(obj.engine, name, quick=quick, progress=progress_for(json_mode))
    if json_mode:
        print_json({**asdict(report), "clean": report.clean})
    else:
        click.echo(f"dataset {name!r} at {report.root}: {report.images} images in the database")
        for title, items in (("missing on disk", report.missing), ("on disk, not in the database", report.unexpected),
                             ("changed since ingest", report.changed), ("unreadable", report.unreadable)):
            _section(title, items, str)
        click.echo("clean" if report.clean else "PROBLEMS FOUND")
    if not report.clean:
        sys.exit(1)


def _section(title: str, items: list, line) -> None:
    if not items:
        return
    click.echo(f"{title}: {len(items)}")
    for item in items[:SHOWN]:
        click.echo(f"  {line(item)}")
    if len(items) > SHOWN:
        click.echo(f"  ... and {len(items) - SHOWN} more (--json lists all)")
