"""`bonedb split`: create, list, show and delete versioned patient-level splits."""

from __future__ import annotations

import click

from boneclf.bodyparts import parse_parts
from boneclf.ingest import DEFAULT_DATASET
from boneclf.splits import TEST_FROM, SplitOptions, create_split, delete_split, list_splits, split_summary
from cli.main import cli
from cli.output import print_json, print_table


@cli.group()
def split():
    """Patient-level train/val/test splits, stored immutably in the database."""


@split.command("create")
@click.argument("name")
@click.option("--dataset", default=DEFAULT_DATASET, show_default=True)
@click.option("--parts", metavar="PART,PART", help="Body parts, e.g. humerus,shoulder. Default: all seven.")
@click.option("--val", default=0.1, show_default=True, help="Fraction for validation (of the non-test images "
              "with --test-from official, of all images with carve).")
@click.option("--test", default=0.1, show_default=True, help="Fraction for test, with --test-from carve.")
@click.option("--seed", default=42, show_default=True)
@click.option("--test-from", type=click.Choice(TEST_FROM), default="official", show_default=True,
              help="official: the source's own held-out images (MURA's valid split, comparable with "
              "published results); carve: a fraction of all images.")
@click.option("--json", "json_mode", is_flag=True)
@click.pass_obj
def create(obj, name, dataset, parts, val, test, seed, test_from, json_mode):
    """Create split NAME: every image of a patient in one subset, across body parts, stratified by
    part and label. The same data, options and seed give the same split on any machine and backend.

    \b
    Example:
      bonedb split create hs-v1 --parts humerus,shoulder --val 0.1 --seed 42
    """
    options = SplitOptions(dataset, parse_parts(parts), val, test, seed, test_from)
    result = create_split(obj.engine, name, options)
    if json_mode:
        print_json(result.__dict__)
        return
    if result.note:
        click.echo(f"warning: {result.note}", err=True)
    verb = "created" if result.created else "already exists, unchanged:"
    click.echo(f"split {name!r} {verb} {result.images} images, content hash {result.content_hash[:16]}")
    if result.created:
        click.echo(f"next: bonedb split show {name}")


@split.command("list")
@click.option("--json", "json_mode", is_flag=True)
@click.pass_obj
def list_(obj, json_mode):
    """List every split version.

    \b
    Example:
      bonedb split list
    """
    rows = list_splits(obj.engine)
    if json_mode:
        print_json(rows)
        return
    for row in rows:
        row["content_hash"] = row["content_hash"][:12]
        row["created_at"] = row["created_at"].isoformat(timespec="seconds")
    print_table(rows, ["name", "dataset", "kind", "seed", "images", "content_hash", "created_at", "parameters"])


@split.command()
@click.argument("name")
@click.option("--json", "json_mode", is_flag=True)
@click.pass_obj
def show(obj, name, json_mode):
    """Images, studies and patients per subset x part x label of split NAME.

    \b
    Example:
      bonedb split show hs-v1 --json
    """
    summary = split_summary(obj.engine, name)
    if json_mode:
        print_json(summary)
        return
    click.echo(f"split {summary['name']} of dataset {summary['dataset']} ({summary['kind']}), "
               f"created {summary['created_at']}, content hash {summary['content_hash']}")
    click.echo(f"parameters: {summary['parameters']}")
    print_table(summary["counts"], ["subset", "part", "label", "images", "studies", "patients"])


@split.command("delete")
@click.argument("name")
@click.pass_obj
def delete(obj, name):
    """Delete split NAME (refused while a training run uses it).

    \b
    Example:
      bonedb split delete hs-v1
    """
    delete_split(obj.engine, name)
    click.echo(f"split {name!r} deleted")
