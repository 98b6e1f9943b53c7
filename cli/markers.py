"""`bonedb markers`: find burned-in markers (side markers, text, label plates) and list them."""

from __future__ import annotations

import click

from boneclf.data.ingest import DEFAULT_DATASET
from boneclf.data.marker_boxes import compute_markers, list_markers
from boneclf.results import plural

from .context import Database, pass_db
from .options import json_option
from .output import emit, print_table, progress_for


@click.group()
def markers():
    """Burned-in markers: lead side markers (L, R), letters, digits, dates, initials and label plates that
    classifiers learn as shortcuts. Boxes are stored per image; `train --mask-markers` paints them over, and
    `evaluate` measures how much of Grad-CAM's heat falls in them. `ingest --verify` finds them as it reads
    each file; `compute` does it for data ingested before.

    \b
    Example:
      bonedb markers compute mura-v1.1
    """


@markers.command()
@click.argument("dataset", required=False, default=DEFAULT_DATASET)
@click.option("--again", is_flag=True, help="Examine every image, not only those the current detector has not seen.")
@json_option
@pass_db
def compute(database: Database, dataset, again, json_mode):
    """Find the markers on DATASET's images (default mura-v1.1) that the current detector has not examined
    yet, and store their boxes.

    \b
    Example:
      bonedb markers compute fx
    """
    result = compute_markers(database.engine, dataset, again=again, progress=progress_for(json_mode))

    def human(r):
        click.echo(f"dataset {r.dataset!r}: {plural(r.images, 'image')}, {r.examined_now} examined now "
                   f"({r.method})")
        boxes = plural(r.boxes, "box", "boxes")
        click.echo(f"{r.with_markers} of {r.examined} examined images carry markers ({boxes})")
        for error in r.unreadable[:10]:
            click.echo(f"unreadable, left out: {error}", err=True)
        click.echo(f"next: bonedb markers list {r.dataset}")

    emit(result, json_mode, human)


@markers.command("list")
@click.argument("dataset", required=False, default=DEFAULT_DATASET)
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1), help="Images per page.")
@click.option("--offset", default=0, show_default=True, type=click.IntRange(0), help="Images to skip (paging).")
@json_option
@pass_db
def list_(database: Database, dataset, limit, offset, json_mode):
    """DATASET's images that carry markers, with their boxes (x, y, width, height in the picture's pixels).

    \b
    Example:
      bonedb markers list fx --limit 20
    """
    found = list_markers(database.engine, dataset, limit, offset)

    def human(rows):
        print_table([{"image": r.image_id, "path": r.path,
                      "boxes": "; ".join(f"{b['kind']} {b['width']}x{b['height']} at {b['x']},{b['y']}"
                                         for b in r.boxes)} for r in rows])

    emit(found, json_mode, human)
