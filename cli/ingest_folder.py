"""`bonedb ingest-folder`: class-folder datasets into the same schema."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import click

from boneclf.bodyparts import BODY_PARTS
from boneclf.folder_dataset import ingest_folder, parse_label_map
from cli.main import cli
from cli.output import print_json, progress_for


@cli.command("ingest-folder")
@click.argument("root", type=click.Path(path_type=Path, file_okay=False))
@click.option("--dataset", required=True, help="Name to file the images under.")
@click.option("--part", type=click.Choice(BODY_PARTS), help="Body part of every image. Default: unknown.")
@click.option("--label-map", metavar="FOLDER=0|1,...",
              help="Extra label folder names, e.g. 'broken=1,intact=0'. Known already: fractured, not fractured, "
              "normal, abnormal, positive, negative, 1, 0.")
@click.option("--patient-pattern", metavar="REGEX",
              help="Regular expression on the file name whose group 'patient' (or first group) is the patient id. "
              "Default: every image is its own patient.")
@click.option("--json", "json_mode", is_flag=True)
@click.pass_obj
def ingest_folder_(obj, root, dataset, part, label_map, patient_pattern, json_mode):
    """Import ROOT/<subset>/<label>/* (or ROOT/<label>/*) as dataset NAME.

    Subset folders (train, val, valid, test) become a split named after the dataset; check it
    with `bonedb audit split NAME`, since such sets often hold the same image in several subsets.
    Junk (desktop.ini, .DS_Store, empty files, non-images) is skipped and counted; truncated or
    undecodable images are reported and left out.

    \b
    Example:
      bonedb ingest-folder ~/FracAtlas-folders --dataset fracatlas --part hand --patient-pattern '^(\\d+)_'
    """
    report = ingest_folder(
        obj.engine, root, dataset=dataset, part=part, label_map=parse_label_map(label_map),
        patient_pattern=patient_pattern, progress=progress_for(json_mode),
    )
    if json_mode:
        print_json(asdict(report))
        return
    for problem in report.bad_images:
        click.echo(f"left out: {problem}", err=True)
    state = "already ingested, unchanged" if report.unchanged else "ingested"
    click.echo(f"dataset {dataset!r} {state}: {report.images} images, {report.patients} patients "
               f"({', '.join(f'{k}: {v}' for k, v in report.per_subset_label.items())}; label 1 = abnormal)")
    if report.skipped:
        click.echo("skipped: " + ", ".join(f"{n} {reason}" for reason, n in sorted(report.skipped.items())))
    if report.source_split:
        click.echo(f"the source's own split is stored as split {report.source_split!r}: "
                   f"check it with `bonedb audit split {report.source_split}`")
    if report.source_split_leaks:
        click.echo(f"warning: {report.source_split_leaks} patients appear in several subsets of the source's split")
