"""`bonedb stats`: what the database holds."""

from __future__ import annotations

import click

from boneclf.data.stats import PartCount, dataset_stats

from .context import Database, pass_db
from .options import json_option
from .output import emit, print_csv, print_table


@click.command()
@click.option("--dataset", help="Only this dataset. Default: every dataset.")
@json_option
@click.option("--csv", "csv_mode", is_flag=True, help="Print the counts table as CSV (for spreadsheets).")
@pass_db
def stats(database: Database, dataset, json_mode, csv_mode):
    """Images, studies and patients per dataset x body part x MURA split x label, and the copies
    (identical files, duplicate groups) found within each source split.

    label is MURA's study label: 1 = abnormal (fracture, hardware or another finding), 0 = normal.

    \b
    Example:
      bonedb stats --dataset mura-v1.1
    """
    result = dataset_stats(database.engine, dataset)
    if csv_mode:
        print_csv(result.counts, list(PartCount._fields))
        return

    def human(r):
        print_table(r.counts)
        if r.totals:
            click.echo("")
            print_table(r.totals)
        if r.duplicates:
            click.echo("\ncopies within each source split (identical files beyond the first; images of a "
                       "duplicate group with another image of the same split):")
            print_table(r.duplicates)
        for name in r.synthetic:  # figures of drawn pictures must never pass for a real dataset's (after the
            # table, so that `bonedb stats | head -1` is still its header)
            click.echo(f"\n{name} is synthetic (drawn by `bonedb synth`): its counts describe no real radiographs")

    emit(result, json_mode, human)
