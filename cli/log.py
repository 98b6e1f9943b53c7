"""`bonedb log`: every ingest and ingest-folder run that changed the database, or was refused or interrupted."""

from __future__ import annotations

import click

from boneclf.store.provenance import IngestEntry, list_ingests

from .context import Database, pass_db
from .options import json_option
from .output import emit, print_table


@click.command("log")
@click.option("--dataset", help="Only the runs for this dataset.")
@json_option
@pass_db
def log(database: Database, dataset, json_mode):
    """The ingest log: when, where from, what changed, and how each run ended.

    One row per `ingest` or `ingest-folder` run that changed anything, or was refused,
    interrupted or failed (a run that found nothing to do leaves no row). --json adds the sha256
    of every CSV read, the options and the full message. The id of a run that added or relabeled
    studies is the label version of the labels it left (see `bonedb history --since ID`).

    \b
    Examples:
      bonedb log
      bonedb log --dataset mura-v1.1 --json
    """
    entries = list_ingests(database.engine, dataset)
    emit(entries, json_mode, _human)


def _human(entries: list[IngestEntry]) -> None:
    print_table([
        {"id": e.id, "finished": f"{e.finished_at:%Y-%m-%d %H:%M:%S}", "command": e.command, "dataset": e.dataset,
         "outcome": e.outcome, "added": e.images_added, "relabeled": e.studies_relabeled, "moved": e.images_moved,
         "unchanged": e.images_unchanged, "skipped": e.rows_skipped, "host": e.host, "version": e.bonedb_version,
         "source": e.source_root, "message": (e.message or "")[:80]}
        for e in entries
    ])
