"""`bonedb duplicates`: compute, list and show a dataset's duplicate groups."""

from __future__ import annotations

import click

from boneclf.data.duplicates import NEAR_THRESHOLD, compute_duplicates, list_groups, show_group
from boneclf.data.ingest import DEFAULT_DATASET
from boneclf.results import plural

from .context import Database, pass_db
from .options import json_option
from .output import emit, print_table, progress_for


@click.group()
def duplicates():
    """Duplicate groups: identical files (exact) and the same picture flipped, rotated, cropped, rescaled
    or re-encoded (near). Splits keep each group in one subset. `ingest --verify` and `ingest-folder`
    compute them; `compute` does it for data ingested before.

    \b
    Example:
      bonedb duplicates list --dataset fx
    """


@duplicates.command()
@click.option("--dataset", default=DEFAULT_DATASET, show_default=True, help="The dataset to group.")
@click.option("--near-bits", default=NEAR_THRESHOLD, show_default=True, type=click.IntRange(0, 16),
              help="Near-hash distance (of 63 bits, best of the 8 orientations) at or below which two pictures "
              "are the same; BENCHMARKS.md shows what each value finds and confuses.")
@json_option
@pass_db
def compute(database: Database, dataset, near_bits, json_mode):
    """Hash the images that have no hash yet, then replace DATASET's duplicate groups.

    \b
    Example:
      bonedb duplicates compute --dataset mura-v1.1
    """
    result = compute_duplicates(database.engine, dataset, max_bits=near_bits, progress=progress_for(json_mode))

    def human(r):
        click.echo(f"dataset {r.dataset!r}: {plural(r.images, 'image')}"
                   + (f", {r.hashed_now} hashed now" if r.hashed_now else ""))
        copies = plural(r.exact_redundant, "redundant copy", "redundant copies")
        click.echo(f"exact: {plural(r.exact_groups, 'group')} ({copies})")
        click.echo(f"near:  {plural(r.near_groups, 'group')} ({plural(r.near_images, 'image')}; {r.method}, "
                   f"<= {r.threshold} bits)")
        for error in r.unreadable[:10]:
            click.echo(f"unreadable, left out: {error}", err=True)
        click.echo(f"next: bonedb duplicates list --dataset {r.dataset}")

    emit(result, json_mode, human)


@duplicates.command("list")
@click.option("--dataset", help="Only this dataset's groups (default: every dataset).")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1), help="Groups per page.")
@click.option("--offset", default=0, show_default=True, type=click.IntRange(0), help="Groups to skip (paging).")
@json_option
@pass_db
def list_(database: Database, dataset, limit, offset, json_mode):
    """Duplicate groups, largest first: kind, size, and the source splits their members come from.

    \b
    Example:
      bonedb duplicates list --dataset fx --limit 20
    """
    groups = list_groups(database.engine, dataset, limit, offset)

    def human(rows):
        print_table([{"id": g.id, "dataset": g.dataset, "kind": g.kind, "images": g.size,
                      "source splits": ",".join(g.source_splits),
                      "crosses": "yes" if g.crosses_source_splits else ""} for g in rows])

    emit(groups, json_mode, human)


@duplicates.command()
@click.argument("group_id", type=int)
@json_option
@pass_db
def show(database: Database, group_id, json_mode):
    """Every image of duplicate group GROUP_ID: path, patient, part, label, source split, distance.

    \b
    Example:
      bonedb duplicates show 12
    """
    group = show_group(database.engine, group_id)

    def human(g):
        click.echo(f"group {g.id} of dataset {g.dataset}: {g.kind}, {plural(g.size, 'image')} "
                   f"({g.method}, threshold {g.threshold:g})")
        print_table([m.to_dict() for m in g.members],
                    ["image_id", "path", "patient", "part", "label", "source_split", "distance"])

    emit(group, json_mode, human)
