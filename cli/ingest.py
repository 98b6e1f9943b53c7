"""`bonedb ingest`: read a MURA download into the database."""

from __future__ import annotations

from pathlib import Path

import click

from boneclf.data.ingest import DEFAULT_DATASET, IngestReport, ingest_mura
from boneclf.data.mura_reader import LABELS_FROM
from boneclf.results import plural
from boneclf.vocabulary import BODY_PARTS, SOURCE_SPLITS, label_word

from .context import Database, pass_db
from .options import json_option, new_name, parts_option
from .output import emit, print_table, progress_for


@click.command()
@click.argument("root", type=click.Path(path_type=Path))
@click.option("--dataset", default=DEFAULT_DATASET, show_default=True, callback=new_name("dataset"),
              help="Name to file the images under.")
@parts_option("Body parts to ingest, e.g. humerus,shoulder. Default: all seven.")
@click.option("--split", "split", type=click.Choice(SOURCE_SPLITS), help="Only MURA's train or valid split.")
@click.option("--verify", is_flag=True, help="Open every image: report missing or undecodable files; "
              "record size, width, height, a sha256 content hash and a perceptual hash.")
@click.option("--labels-from", type=click.Choice(LABELS_FROM),
              help="When the labeled-studies CSV and the study folder names disagree, which wins. "
              "Default: refuse and list every conflict.")
@click.option("--skip-bad", is_flag=True, help="Leave out bad rows (reported) instead of refusing the whole ingest.")
@click.option("--follow-symlinks", is_flag=True, help="Accept images that symbolic links place "
              "outside ROOT (refused by default: export and training would read files beyond the dataset).")
@json_option
@pass_db
def ingest(database: Database, root, dataset, parts, split, verify, labels_from, skip_bad, follow_symlinks,
           json_mode):
    """Read MURA's CSV files under ROOT into the database, atomically.

    ROOT is the folder that holds MURA-v1.1/ (or MURA-v1.1/ itself). Each study's label is
    MURA's: 1 = abnormal, 0 = normal, read per study by radiologists. Abnormal covers fractures,
    hardware and other findings; the per-bone views call it is_fractured, as the seed paper did.
    A second run over the same files changes nothing; a relabeled copy updates labels and paths.
    Every run that changes anything (or is refused or interrupted) is logged: `bonedb log`; every
    label change is kept with its reason and source: `bonedb history`.

    \b
    Examples:
      bonedb ingest ~/data                      # ~/data/MURA-v1.1/...
      bonedb ingest ~/data --parts humerus,shoulder --verify
      bonedb ingest ~/relabeled --labels-from csv
    """
    report = ingest_mura(
        database.engine, root, dataset=dataset, parts=parts or BODY_PARTS,
        splits=(split,) if split else SOURCE_SPLITS, verify=verify, labels_from=labels_from, skip_bad=skip_bad,
        follow_symlinks=follow_symlinks, progress=progress_for(json_mode),
        on_wait=lambda message: click.echo(message, err=True),
    )
    emit(report, json_mode, lambda r: _human(r, database))


def _human(report: IngestReport, database: Database) -> None:
    for problem in report.skipped:
        click.echo(f"skipped: {problem}", err=True)
    for conflict in report.conflicts_settled:
        click.echo(f"label conflict settled by --labels-from {report.labels_from}: {conflict.study.describe()} "
                   f"csv={conflict.csv_label} folder={conflict.folder_label} ({conflict.file}:{conflict.line})")
    for decided in report.review_conflicts:
        click.echo(f"review conflict: {decided.describe()}", err=True)
    for relabel in report.relabeled:
        click.echo(f"relabeled: {relabel.study.describe()} {relabel.old_label} ({label_word(relabel.old_label)}) -> "
                   f"{relabel.new_label} ({label_word(relabel.new_label)}) by {relabel.reason}: {relabel.source}")
    if report.root_changed_from:
        click.echo(f"dataset root moved: {report.root_changed_from} -> {report.root}")
    if report.stats is not None:
        print_table(report.stats.counts, ["part", "split", "label", "images", "studies", "patients"])
        click.echo("")
    if not report.changed:
        kept = (f" (and keeps {plural(len(report.review_conflicts), 'decided label')} the files disagree with)"
                if report.review_conflicts else "")
        click.echo(f"nothing to do: {database.masked_url} already holds these "
                   f"{plural(report.images_unchanged, 'image')} of dataset {report.dataset!r} exactly{kept}")
    else:
        changes = [
            f"added {plural(report.images_added, 'image')}, {plural(report.studies_added, 'study', 'studies')}, "
            f"{plural(report.patients_added, 'patient')}",
            f"{plural(len(report.relabeled), 'study', 'studies')} relabeled" if report.relabeled else "",
            f"{plural(report.images_moved, 'image path')} moved" if report.images_moved else "",
            f"file facts of {plural(report.images_measured, 'image')} updated" if report.images_measured else "",
            f"{plural(report.images_unchanged, 'image')} unchanged" if report.images_unchanged else "",
        ]
        click.echo(f"dataset {report.dataset!r} in {database.masked_url}: " + "; ".join(c for c in changes if c))
        history = f"; its label changes: bonedb history --ingest {report.ingest_id}" if report.relabeled else ""
        click.echo(f"logged as ingest {report.ingest_id} (bonedb log){history}")
    if report.skipped:  # counted here too: stderr names each, and may not be what a script reads
        click.echo(f"left out {plural(len(report.skipped), 'bad row')} (--skip-bad), each named in a `skipped:` "
                   "line on stderr")
    if report.images_stale:
        click.echo(f"note: {plural(report.images_stale, 'image')} in the database no longer listed in the CSVs "
                   "(left in place)")
    if report.unused_labels:
        click.echo(f"note: {plural(report.unused_labels, 'labeled study', 'labeled studies')} without any image listed "
                   "(not ingested)")
