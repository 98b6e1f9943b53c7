"""`bonedb ingest-folder`: class-folder datasets into the same schema."""

from __future__ import annotations

from pathlib import Path

import click

from boneclf.data.folder_dataset import FolderReport, compile_patient_pattern, describe_left_out, parse_label_map
from boneclf.data.folder_dataset import ingest_folder as ingest_folder_dataset
from boneclf.errors import BonedbError
from boneclf.results import plural
from boneclf.vocabulary import BODY_PARTS

from .context import Database, pass_db
from .options import json_option, new_name
from .output import emit, progress_for


def _pattern(_ctx, _param, value):
    try:
        return compile_patient_pattern(value) and value
    except BonedbError as exc:
        raise click.BadParameter(str(exc)) from None


@click.command("ingest-folder")
@click.argument("root", type=click.Path(path_type=Path, file_okay=False))
@click.option("--dataset", required=True, callback=new_name("dataset"), help="Name to file the images under.")
@click.option("--part", type=click.Choice(BODY_PARTS), help="Body part of every image. Default: unknown.")
@click.option("--label-map", metavar="FOLDER=0|1,...",
              help="Extra label folder names, e.g. 'broken=1,intact=0'. Known already: fractured, not fractured, "
              "normal, abnormal, positive, negative, 1, 0.")
@click.option("--patient-pattern", metavar="REGEX", callback=_pattern,
              help="Regular expression on the file name whose group 'patient' (or first group) is the patient id. "
              "Default: every image is its own patient.")
@click.option("--verify", is_flag=True, help="Accepted for symmetry with `ingest`: ingest-folder always opens and "
              "checks every image.")
@click.option("--follow-symlinks", is_flag=True, help="Accept images that symbolic links place outside ROOT "
              "(left out by default, named: export and training would read files beyond the dataset).")
@json_option
@pass_db
def ingest_folder(database: Database, root, dataset, part, label_map, patient_pattern, verify, follow_symlinks,
                  json_mode):
    """Import ROOT/<subset>/<label>/* (or ROOT/<label>/*) as dataset NAME.

    Subset folders (train, val, valid, test) become a split named after the dataset; check it
    with `bonedb audit split NAME`, since such sets often hold the same image in several subsets.
    Junk (desktop.ini, .DS_Store, empty files, non-images) is skipped and counted; truncated or
    undecodable images, images over the pixel limit, broken links, links out of ROOT and names
    no database column takes are reported and left out. Every image is opened and checked
    (--verify is always on).

    \b
    Example:
      bonedb ingest-folder ~/FracAtlas-folders --dataset fracatlas --part hand --patient-pattern '^(\\d+)_'
    """
    report = ingest_folder_dataset(
        database.engine, root, dataset=dataset, part=part, label_map=parse_label_map(label_map),
        patient_pattern=patient_pattern, follow_symlinks=follow_symlinks, progress=progress_for(json_mode),
        on_wait=lambda message: click.echo(message, err=True),
    )
    emit(report, json_mode, _human)


def _human(report: FolderReport) -> None:
    for problem in report.bad_images + report.refused_formats:
        click.echo(f"left out: {problem}", err=True)
    for conflict in report.review_conflicts:
        click.echo(f"review conflict: {conflict}", err=True)
    state = "already ingested, unchanged" if report.unchanged else "ingested"
    per_label = ", ".join(f"{k}: {v}" for k, v in report.per_subset_label.items())
    click.echo(f"dataset {report.dataset!r} {state}: {plural(report.images, 'image')}, "
               f"{plural(report.patients, 'patient')} ({per_label}; label 1 = abnormal)")
    if report.ingest_id is not None:
        click.echo(f"logged as ingest {report.ingest_id} (bonedb log)")
        click.echo(f"duplicate groups: {report.duplicate_groups} (bonedb duplicates list --dataset {report.dataset})")
    if report.left_out:
        click.echo(f"skipped: {describe_left_out(report.left_out)}")
    if report.source_split:
        click.echo(f"the source's own split is stored as split {report.source_split!r}: "
                   f"check it with `bonedb audit split {report.source_split}`")
    if report.source_split_leaks:
        click.echo(f"warning: {plural(report.source_split_leaks, 'patient appears', 'patients appear')} in several "
                   "subsets of the source's split")
    if report.source_split_identical_files:
        click.echo(f"warning: {plural(report.source_split_identical_files, 'file appears', 'files appear')} "
                   "identically (same sha256) in several subsets of the source's split: a model tested on it "
                   f"has seen those test images; `bonedb split create NEW --dataset {report.dataset}` makes a "
                   "split that keeps each copy in one subset")

