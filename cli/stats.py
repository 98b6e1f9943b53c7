"""`bonedb stats`: what the database holds."""

from __future__ import annotations

import click

from boneclf.migrate import require_head
from boneclf.stats import dataset_stats, dataset_totals
from cli.main import cli
from cli.output import print_json, print_table


@cli.command()
@click.option("--dataset", help="Only this dataset. Default: every dataset.")
@click.option("--json", "json_mode", is_flag=True, help="Print the counts as JSON.")
@click.pass_obj
def stats(obj, dataset, json_mode):
    """Images, studies and patients per dataset x body part x MURA split x label.

    label is MURA's study label: 1 = abnormal (fracture, hardware or another finding), 0 = normal.

    \b
    Example:
      bonedb stats --dataset mura-v1.1
    """
    require_head(obj.engine)
    rows = dataset_stats(obj.engine, dataset)
    totals = dataset_totals(obj.engine, dataset)
    if json_mode:
        print_json({"counts": rows, "totals": totals})
        return
    print_table(rows)
    if totals:
        click.echo("")
        print_table(totals)
