"""`bonedb export`: a split as class-directory trees or TFRecord shards."""

from __future__ import annotations

from pathlib import Path

import click

from boneclf.data.export import FORMATS, LINKS, ExportReport, export_split
from boneclf.results import plural
from boneclf.vocabulary import FRACTURE, STAGES

from .context import Database, pass_db
from .options import confirmer, json_option, parts_option, yes_option
from .output import emit, progress_for


@click.command()
@click.argument("name")
@click.argument("out", type=click.Path(path_type=Path, file_okay=False))
@click.option("--stage", type=click.Choice(STAGES), default=FRACTURE, show_default=True,
              help="bodypart: OUT/<subset>/<part>/; fracture: OUT/<part>/<subset>/{fractured,normal}/.")
@parts_option("Only these parts of the split. Default: all of them.")
@click.option("--combined", is_flag=True, help="With --stage fracture: one tree OUT/<subset>/{fractured,normal}/ "
              "over the chosen parts instead of one per part.")
@click.option("--link", type=click.Choice(LINKS), default="hardlink", show_default=True,
              help="hardlink falls back to copy across filesystems.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="files", show_default=True,
              help="tfrecord: sharded TFRecord files per subset instead of image files.")
@click.option("--image-size", type=int, help="tfrecord: store images decoded and resized to this many pixels "
              "(uint8, as training reads them), so training decodes nothing. Default: the files' own bytes.")
@click.option("--pad", is_flag=True, help="With --image-size: keep the aspect ratio, padding to square.")
@click.option("--canny", is_flag=True, help="With --image-size: store Canny edge maps.")
@click.option("--shard-size", type=int, help="tfrecord: images per shard (default 1024).")
@click.option("--force", is_flag=True, help="Replace OUT if it holds a previous bonedb export and nothing else "
              "(every file listed in its manifest); asks first on a terminal, else needs --yes.")
@click.option("--include-flagged", is_flag=True, help="Also export images flagged as maybe showing a patient's "
              "identity in their pixels (burned-in text; `bonedb audit dataset` lists them). Default: left out.")
@yes_option("replacing a previous export")
@json_option
@pass_db
def export(database: Database, name, out, stage, parts, combined, link, fmt, image_size, pad, canny, shard_size,
           force, include_flagged, yes, json_mode):
    """Write split NAME under OUT as class folders, with manifest.csv and split.json.

    "fractured" holds MURA's abnormal studies (fractures, hardware and other findings).
    OUT appears complete or not at all: the tree is built beside it and renamed into place.

    \b
    Examples:
      bonedb export hs-v1 exports/stage1 --stage bodypart
      bonedb export hs-v1 exports/stage2 --stage fracture --parts humerus,shoulder
      bonedb export hs-v1 exports/shards --format tfrecord
      bonedb export hs-v1 exports/shards-224 --format tfrecord --image-size 224   # training-ready
      bonedb export hs-v1 exports/stage1 --stage bodypart --force --yes   # replace it, no question
    """
    progress = progress_for(json_mode)
    if fmt == "tfrecord":
        from boneclf.ml.tfrecords import export_shards  # TensorFlow loads only when asked for

        report = export_shards(database.engine, name, out, stage=stage, parts=parts, image_size=image_size,
                               pad=pad, canny=canny, shard_size=shard_size, force=force,
                               confirm=confirmer(yes), progress=progress, include_flagged=include_flagged)
    else:
        if image_size or pad or canny or shard_size:
            raise click.UsageError("--image-size, --pad, --canny and --shard-size go with --format tfrecord")
        report = export_split(database.engine, name, out, stage=stage, parts=parts, combined=combined, link=link,
                              force=force, confirm=confirmer(yes), progress=progress,
                              include_flagged=include_flagged)
    emit(report, json_mode, _human)


def _human(report: ExportReport) -> None:
    for line in report.stale_removed:
        click.echo(f"note: {line}")
    counts = ", ".join(f"{subset} {n}" for subset, n in report.per_subset.items())
    click.echo(f"exported split {report.split!r} ({plural(report.images, 'image')}: {counts}) to {report.out}")
    if report.copied_instead_of_linked:
        click.echo(f"note: {plural(report.copied_instead_of_linked, 'file was', 'files were')} copied: "
                   "hard links are not possible there")
    if report.replaced_previous:
        click.echo("replaced the previous export")
    if report.flagged_left_out:
        click.echo(f"left out: {plural(report.flagged_left_out, 'image')} that may show identity in pixels "
                   "(--include-flagged exports them)")
