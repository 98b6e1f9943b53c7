"""`bonedb history`: every label change, with the ingest that made it, why and from which file."""

from __future__ import annotations

import click

from boneclf.store.provenance import LabelHistory, label_history
from boneclf.vocabulary import label_word

from .context import Database, pass_db
from .options import json_option
from .output import emit, print_table


@click.command("history")
@click.argument("dataset", required=False)
@click.argument("study", nargs=-1, metavar="[PATIENT PART NUMBER]")
@click.option("--since", "since", type=int, metavar="INGEST", help="Only changes made after ingest INGEST.")
@click.option("--ingest", "ingest", type=int, metavar="INGEST", help="Only changes made by ingest INGEST.")
@json_option
@pass_db
def history(database: Database, dataset, study, since, ingest, json_mode):
    """Label history of one study, of dataset DATASET, or of everything, with review decisions.

    Each change: when, the old and new label (1 = abnormal, 0 = normal), the ingest that made it
    (`bonedb log`), why (folder rename, labels csv, labels-from csv or labels-from folder) and the
    CSV line or study folder the new label came from. A steward's `bonedb labels set` is a change
    with reason review, the reviewer and the reason given. Review decisions recorded in `bonedb
    serve` (label confirmed, label disputed with its note) are listed too; they never change a label.

    \b
    Examples:
      bonedb history mura-v1.1 patient00001 shoulder 1
      bonedb history mura-v1.1
      bonedb history --since 3          # everything changed after ingest 3
    """
    named = None
    if study:
        number = study[-1].lower().removeprefix("study")
        if len(study) != 3 or not number.isdigit():
            raise click.UsageError("name a study as DATASET PATIENT PART NUMBER, "
                                   "e.g. mura-v1.1 patient00001 shoulder 1")
        named = (study[0], study[1].lower(), int(number))
    result = label_history(database.engine, dataset=dataset, study=named, since=since, ingest=ingest)
    emit(result, json_mode, _human)


def _human(result: LabelHistory) -> None:
    if result.study is not None:
        today = ("none (not labelled yet)" if result.current_label is None
                 else f"{result.current_label} ({label_word(result.current_label)})")
        click.echo(f"{result.study} of dataset {result.dataset!r}: label {today} today")
    if not result.events:
        click.echo("no label change recorded" + (" (since it was ingested)" if result.study else ""))
        return
    print_table([
        {"when": f"{e.at:%Y-%m-%d %H:%M:%S}", "by": e.by, "dataset": e.dataset, "study": e.study,
         "change": f"{'none' if e.old_label is None else e.old_label} -> {e.new_label}" if e.kind == "relabel"
         else f"label {e.new_label} kept",
         "reason": e.reason, "source": e.source or ""}
        for e in result.events
    ])
