"""`bonedb ingest-dicom`: a PACS export of radiographs into the database, without patient identity."""

from __future__ import annotations

from pathlib import Path

import click

from boneclf.data.dicom_identity import KEY_ENV, load_key
from boneclf.data.dicom_ingest import DEFAULT_IMAGES, DicomReport
from boneclf.data.dicom_ingest import ingest_dicom as ingest_dicom_tree
from boneclf.data.folder_dataset import parse_label_map
from boneclf.results import plural

from .context import Database, pass_db
from .options import json_option
from .output import emit, progress_for

SHOWN = 20  # skipped files listed on screen; --json lists all


@click.command("ingest-dicom")
@click.argument("root", type=click.Path(path_type=Path, file_okay=False))
@click.option("--dataset", required=True, help="Name to file the images under.")
@click.option("--labels", type=click.Path(path_type=Path, dir_okay=False),
              help="CSV with a StudyInstanceUID or AccessionNumber column and a label column (0/1 or words). "
              "Studies it does not name are ingested unlabelled; splits leave them out.")
@click.option("--label-map", metavar="WORD=0|1,...",
              help="Extra label words for --labels, e.g. 'fracture=1,clear=0'. Known already: normal, abnormal, "
              "fractured, not fractured, positive, negative, 1, 0.")
@click.option("--key-file", type=click.Path(path_type=Path, dir_okay=False),
              help=f"File holding the secret pseudonym key (at least 16 bytes). Default: ${KEY_ENV}. Keep it: "
              "the same key gives the same patient the same pseudonym in every later ingest.")
@click.option("--parts-map", type=click.Path(path_type=Path, dir_okay=False),
              help="CSV of TERM,PART lines adding body-part words (BodyPartExamined codes or words in the "
              "descriptions) to the default table, e.g. 'MAIN,hand'.")
@click.option("--images", "images_dir", type=click.Path(path_type=Path, file_okay=False),
              help=f"Folder bonedb writes the PNGs to. Default: ./{DEFAULT_IMAGES}/NAME, or where an earlier "
              "ingest of the dataset put them.")
@click.option("--skip-bad", is_flag=True, help="Leave out malformed files, undecodable pixel data and bad label "
              "rows (listed) instead of refusing the whole ingest.")
@json_option
@pass_db
def ingest_dicom(database: Database, root, dataset, labels, label_map, key_file, parts_map, images_dir,
                         skip_bad, json_mode):
    """Import the CR and DX radiographs under ROOT (DICOM files, any names) as dataset --dataset NAME.

    Pixels go through the Modality LUT and the VOI LUT or window, MONOCHROME1 is inverted, and each
    image becomes an 8-bit PNG at XR_<PART>/patient<P>/study<S>/image<I>.png, where P, S and I are
    keyed pseudonyms (HMAC-SHA256) of PatientID, StudyInstanceUID and SOPInstanceUID. Names, dates,
    accession numbers, institutions, physicians, comments and private tags are never stored. Other
    modalities and non-DICOM files are skipped and listed; images whose BurnedInAnnotation is YES are
    flagged "may show identity in pixels" and left out of exports unless --include-flagged.

    \b
    Example:
      bonedb ingest-dicom /media/pacs-export --dataset hospital-xr --key-file ~/bonedb.key --labels reads.csv
    """
    report = ingest_dicom_tree(
        database.engine, root, dataset=dataset, key=load_key(key_file), images_dir=images_dir, labels=labels,
        label_map=parse_label_map(label_map), parts_map=parts_map, skip_bad=skip_bad,
        progress=progress_for(json_mode),
    )
    emit(report, json_mode, _human)


def _human(report: DicomReport) -> None:
    for line in report.left_out:
        click.echo(f"left out: {line}", err=True)
    for line in report.review_conflicts:
        click.echo(f"review conflict: {line}; to take the CSV's label, decide again with `bonedb labels set`",
                   err=True)
    state = "ingested" if report.changed else "already ingested, unchanged"
    click.echo(f"dataset {report.dataset!r} {state}: {plural(report.images_added, 'image')} added, "
               f"{report.images_unchanged} unchanged, from {plural(report.files, 'file')} in {report.source}")
    click.echo(f"{plural(report.patients_added, 'patient')} and {plural(report.studies_added, 'study', 'studies')} "
               f"added; PNGs in {report.images_dir}; pseudonym key id {report.key_id}")
    if report.studies_relabeled:
        click.echo(f"labels: {plural(report.studies_relabeled, 'study', 'studies')} labelled or relabelled by "
                   f"{report.labels_file} (bonedb history)")
    if report.unlabelled_studies:
        click.echo(f"unlabelled: {plural(report.unlabelled_studies, 'study', 'studies')} (splits leave them out; "
                   "label them with --labels)")
    if report.unknown_parts:
        found = ", ".join(f"{code} ({n})" for code, n in sorted(report.unknown_parts.items()))
        click.echo(f"unknown body part, by BodyPartExamined: {found}; name them with --parts-map")
    if report.flagged:
        click.echo(f"flagged: {plural(report.flagged, 'image')} may show identity in pixels (bonedb audit dataset "
                   f"{report.dataset}); exports leave them out unless --include-flagged")
    if report.skipped:
        click.echo(f"skipped: {plural(len(report.skipped), 'file')}")
        for line in report.skipped[:SHOWN]:
            click.echo(f"  {line}")
        if len(report.skipped) > SHOWN:
            click.echo(f"  ... and {len(report.skipped) - SHOWN} more (--json lists all)")
    if report.ingest_id is not None:
        click.echo(f"logged as ingest {report.ingest_id} (bonedb log); duplicate groups: {report.duplicate_groups}")
