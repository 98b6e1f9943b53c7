"""`bonedb duplicates`: compute, list and show a dataset's duplicate groups; confirm or reject one."""

from __future__ import annotations

import click

from boneclf.data.duplicates import compute_duplicates, decide_group, list_groups, show_group
from boneclf.data.ingest import DEFAULT_DATASET
from boneclf.results import plural
from boneclf.store.reviews import DUPLICATE_DECISIONS

from .context import Database, pass_db
from .options import json_option
from .output import emit, print_table, progress_for


@click.group()
def duplicates():
    """Duplicate groups: identical files (exact), and the same radiograph turned, flipped, cropped, rescaled,
    re-encoded or relabelled (near), each pair verified on the pixels. Splits keep each group in one subset,
    and `audit split` judges by the same groups. `ingest --verify` and `ingest-folder` compute them;
    `compute` does it for data ingested before. A steward's `confirm` or `reject` overrides the verdict.

    \b
    Example:
      bonedb duplicates list --dataset fx
    """


@duplicates.command()
@click.option("--dataset", default=DEFAULT_DATASET, show_default=True, help="The dataset to group.")
@json_option
@pass_db
def compute(database: Database, dataset, json_mode):
    """Hash the images that have no hash yet, verify candidate pairs not yet judged, and replace DATASET's
    duplicate groups (stewards' decisions kept).

    \b
    Example:
      bonedb duplicates compute --dataset mura-v1.1
    """
    result = compute_duplicates(database.engine, dataset, progress=progress_for(json_mode))

    def human(r):
        click.echo(f"dataset {r.dataset!r}: {plural(r.images, 'image')}"
                   + (f", {r.hashed_now} hashed now" if r.hashed_now else ""))
        copies = plural(r.exact_redundant, "redundant copy", "redundant copies")
        click.echo(f"exact: {plural(r.exact_groups, 'group')} ({copies})")
        click.echo(f"near:  {plural(r.near_groups, 'group')} ({plural(r.near_images, 'image')}); "
                   f"{plural(r.candidates, 'candidate pair')}, {r.verified_now} verified now "
                   f"({r.method}, joined at correlation >= {r.threshold:g})")
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
    """Every image of duplicate group GROUP_ID (path, patient, part, label, source split, score), and for a
    near group the verified pairs that join it: turn, scale, mirror, keypoints agreeing, overlap, correlation.

    \b
    Example:
      bonedb duplicates show 12
    """
    group = show_group(database.engine, group_id)

    def human(g):
        click.echo(f"group {g.id} of dataset {g.dataset}: {g.kind}, {plural(g.size, 'image')} "
                   f"({g.method}" + (f", joined at correlation >= {g.threshold:g})" if g.kind == "near" else ")"))
        print_table([m.to_dict() for m in g.members],
                    ["image_id", "path", "patient", "part", "label", "source_split", "score"])
        if g.pairs:
            click.echo("verified pairs (the second image onto the first):")
            print_table([{"images": f"{p.first} ~ {p.second}", "same": "yes" if p.same else "no",
                          "mirrored": "yes" if p.flipped else "", "turn": f"{p.angle:+.1f}",
                          "scale": f"{p.scale:.2f}", "keypoints": p.inliers, "overlap": f"{p.overlap:.0%}",
                          "correlation": f"{p.score:.2f}"} for p in g.pairs])
        click.echo(f"next: bonedb duplicates reject {g.id} --note WHY   (if these are not one picture)")

    emit(group, json_mode, human)


def _decide(database: Database, group_id: int, decision: str, note: str | None, reviewer: str | None,
            json_mode: bool) -> None:
    decided = decide_group(database.engine, group_id, decision, note=note, reviewer=reviewer)

    def human(d):
        click.echo(f"{d.review.decision} on group {group_id} ({plural(len(d.review.members or []), 'image')}) "
                   f"by {d.review.reviewer}; recorded as review {d.review.id}")
        where = f"now in group {d.group_now}" if d.group_now is not None else "now in no near group"
        click.echo(f"dataset {d.dataset!r} regrouped: {plural(d.groups, 'group')}; its first image is {where}. "
                   "The decision holds through `duplicates compute` and re-ingest; splits made from now on follow it")

    emit(decided, json_mode, human)


_NOTE = click.option("--note", help="Why (kept with the decision; `bonedb history` lists it).")
_REVIEWER = click.option("--reviewer", help="Who decides (default: the operating-system user).")


@duplicates.command()
@click.argument("group_id", type=int)
@_NOTE
@_REVIEWER
@json_option
@pass_db
def confirm(database: Database, group_id, note, reviewer, json_mode):
    """Say that the images of near group GROUP_ID are one picture: they stay together whatever the verifier
    says later.

    \b
    Example:
      bonedb duplicates confirm 12 --note "same radiograph, re-exported"
    """
    _decide(database, group_id, DUPLICATE_DECISIONS[0], note, reviewer, json_mode)


@duplicates.command()
@click.argument("group_id", type=int)
@_NOTE
@_REVIEWER
@json_option
@pass_db
def reject(database: Database, group_id, note, reviewer, json_mode):
    """Say that the images of near group GROUP_ID are not one picture: no two of them are joined again
    (others may still join them), and the groups are rebuilt at once.

    \b
    Example:
      bonedb duplicates reject 12 --note "two patients, both with a plate"
    """
    _decide(database, group_id, DUPLICATE_DECISIONS[1], note, reviewer, json_mode)
