"""`bonedb split`: create, list, show and delete versioned patient-level splits."""

from __future__ import annotations

import click

from boneclf.data.ingest import DEFAULT_DATASET
from boneclf.data.leak_groups import GROUP_BY
from boneclf.data.splits import (
    TEST_FROM,
    SplitOptions,
    create_split,
    delete_split,
    describe_parameters,
    list_splits,
    rebase_split,
    split_summary,
)
from boneclf.results import plural
from boneclf.store.provenance import describe_version

from .context import Database, pass_db
from .options import confirmer, json_option, parts_option, yes_option
from .output import emit, print_table


@click.group()
def split():
    """Patient-level train/val/test splits, stored immutably in the database.

    \b
    Example:
      bonedb split list
    """


@split.command("create")
@click.argument("name")
@click.option("--dataset", default=DEFAULT_DATASET, show_default=True, help="The dataset to split.")
@parts_option("Body parts, e.g. humerus,shoulder (unknown: a folder dataset ingested without --part). "
              "Default: every part the dataset has.")
@click.option("--val", default=0.1, show_default=True, help="Fraction for validation (of the non-test images "
              "with --test-from official, of all images with carve).")
@click.option("--test", default=0.1, show_default=True, help="Fraction for test, with --test-from carve.")
@click.option("--seed", default=42, show_default=True, help="Same data, options and seed: the same split.")
@click.option("--test-from", type=click.Choice(TEST_FROM), default="official", show_default=True,
              help="official: the source's own held-out images (MURA's valid split, comparable with "
              "published results); carve: a fraction of all images.")
@click.option("--group-by", type=click.Choice(GROUP_BY), default="both", show_default=True,
              help="What ties images into one leak group that a subset gets whole: the patient (across parts), "
              "the duplicate groups (`bonedb duplicates compute`), or both (union).")
@click.option("--groups-from", metavar="CSV", help="Your own group ids: a CSV with `path` and `group` columns "
              "(paths relative to the dataset root); united with --group-by.")
@click.option("--group-pattern", metavar="REGEX", help="Read a group id out of each file name (the first "
              "capture group), e.g. '^(.+?)(-rotated[0-9]+)?[.]'; united with --group-by.")
@click.option("--allow-leaks", is_flag=True, help="Store the split even when its audit finds leaks (recorded "
              "with it; `split show` says so). Without it a leaking split is refused.")
@click.option("--dedupe", is_flag=True, help="Keep one image of each exact-duplicate group (first by path; "
              "copies with disagreeing labels all stay); the others are recorded as omitted.")
@click.option("--from", "from_split", metavar="SPLIT",
              help="Re-base: the same subsets as split SPLIT, with today's labels pinned (after a relabel). "
              "Takes no other split option.")
@json_option
@click.pass_context
@pass_db
def create(database: Database, ctx, name, dataset, parts, val, test, seed, test_from, group_by, groups_from,
           group_pattern, allow_leaks, dedupe, from_split, json_mode):
    """Create split NAME: whole leak groups per subset (a patient across body parts, united with
    duplicate groups: copies, flips, rotations of one picture), stratified by part and label. A split
    whose audit still finds a leak is refused unless --allow-leaks. The same data, options and seed
    give the same split on any machine and backend. Each image's label is pinned as it is now;
    training and evaluation read the pinned labels.

    \b
    Examples:
      bonedb split create hs-v1 --parts humerus,shoulder --val 0.1 --seed 42
      bonedb split create fx-v1 --dataset fx --test-from carve --dedupe
      bonedb split create fx-v2 --dataset fx --test-from carve --group-pattern '^([0-9]+)'
      bonedb split create hs-v2 --from hs-v1      # same subsets, today's labels
    """
    if from_split is not None:
        given = [f"--{p.replace('_', '-')}" for p in ("dataset", "parts", "val", "test", "seed", "test_from",
                                                      "group_by", "groups_from", "group_pattern", "allow_leaks",
                                                      "dedupe")
                 if ctx.get_parameter_source(p) is not click.core.ParameterSource.DEFAULT]
        if given:
            raise click.UsageError(f"--from copies the subsets of split {from_split!r}; drop {', '.join(given)}")
        result = rebase_split(database.engine, name, from_split)
    else:
        result = create_split(database.engine, name, SplitOptions(
            dataset, parts or (), val, test, seed, test_from, group_by=group_by, groups_from=groups_from,
            group_pattern=group_pattern, allow_leaks=allow_leaks, dedupe=dedupe))

    def human(r):
        if r.note:
            click.echo(f"warning: {r.note}", err=True)
        verb = "created" if r.created else "already exists, unchanged:"
        click.echo(f"split {name!r} {verb} {plural(r.images, 'image')}, content hash {r.content_hash[:16]}")
        if r.created and r.groups:
            shares = ", ".join(f"{s} {f:.1%}" for s, f in r.fractions.items())
            click.echo(f"{plural(r.groups, 'leak group')} assigned whole (largest: {plural(r.largest_group, 'image')});"
                       f" shares: {shares}")
        if r.omitted:
            click.echo(f"--dedupe left out {plural(r.omitted, 'identical copy', 'identical copies')} "
                       "(recorded with the copy kept)")
        for warning in r.warnings:
            click.echo(f"warning: {warning}", err=True)
        if r.leaks:
            click.echo("warning: stored with leaks (--allow-leaks): "
                       + ", ".join(f"{n} {k}" for k, n in r.leaks.items()), err=True)
        if r.rebased_from:
            changed = r.changes.describe() if r.changes.changed else \
                f"no label changed since split {r.rebased_from!r} was made"
            click.echo(f"re-based from split {r.rebased_from!r}: {changed}")
        if r.created:
            click.echo(f"next: bonedb split show {name}")

    emit(result, json_mode, human)


@split.command("list")
@json_option
@pass_db
def list_(database: Database, json_mode):
    """List every split version.

    \b
    Example:
      bonedb split list
    """
    splits = list_splits(database.engine)

    def human(rows):
        print_table([{**s.to_dict(), "content_hash": s.content_hash[:12], "options": _as_options(s.parameters)}
                     for s in rows],
                    ["name", "dataset", "kind", "seed", "images", "content_hash", "label_version", "created_at",
                     "options"])

    emit(splits, json_mode, human)


def _as_options(parameters: dict) -> str:
    """A split's stored parameters as the `split create` options that make them (dataset and seed have columns
    of their own); `--json` keeps the parameters as stored."""
    words = []
    for key, value in sorted(parameters.items()):
        if key in ("dataset", "seed") or value is None or value is False or value == []:
            continue
        flag = "--" + key.replace("_", "-")
        shown = ",".join(map(str, value)) if isinstance(value, list) else value
        words.append(flag if value is True else f"{flag} {shown}")
    return " ".join(words)


@split.command()
@click.argument("name")
@json_option
@pass_db
def show(database: Database, name, json_mode):
    """Images, studies and patients per subset x part x label of split NAME.

    \b
    Example:
      bonedb split show hs-v1 --json
    """
    summary = split_summary(database.engine, name)

    def human(s):
        click.echo(f"split {s.name} of dataset {s.dataset} ({s.kind}), created "
                   f"{s.created_at:%Y-%m-%d %H:%M:%S}, content hash {s.content_hash}")
        click.echo(f"parameters: {describe_parameters(s.parameters)}")
        click.echo(f"labels: pinned {describe_version(s.label_version)} (the counts below are by pinned label)")
        if s.label_changes.changed:
            click.echo(f"note: {s.label_changes.describe()}")
        click.echo(f"audit: {s.audit_line()}")
        if s.omitted:
            click.echo(f"dedupe: {plural(s.omitted, 'identical copy', 'identical copies')} left out")
        print_table(s.counts)

    emit(summary, json_mode, human)


@split.command("delete")
@click.argument("name")
@yes_option("deleting")
@pass_db
def delete(database: Database, name, yes):
    """Delete split NAME (refused while a training run uses it: `bonedb runs delete` those first).
    Asks first on a terminal; elsewhere needs --yes.

    \b
    Example:
      bonedb split delete hs-v1 --yes
    """
    delete_split(database.engine, name, confirm=confirmer(yes))
    click.echo(f"split {name!r} deleted")
