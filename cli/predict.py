"""`bonedb predict`: two-stage prediction with Grad-CAM overlays."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from boneclf.ml.predict import Prediction, Predictor, prediction_json_lines, refused_outright
from boneclf.results import plural

from .context import Database, pass_db
from .options import json_option
from .output import print_table


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--bodypart-run", type=int, metavar="RUN",
              help="Stage-1 run. Default: the best finished one; none is used with a --fracture-run of the "
              "unknown part (a one-region folder set), nor of one part when no stage-1 run exists.")
@click.option("--fracture-run", type=int, metavar="RUN",
              help="Stage-2 run. Default: for each part, the best finished run covering it.")
@click.option("--gradcam", "gradcam_dir", type=click.Path(path_type=Path, file_okay=False), metavar="OUTDIR",
              help="Write each image with its Grad-CAM heatmap overlaid, as PNG, into OUTDIR, named after the "
              "image (dataset_part_patient_study_image_gradcam.png for an ingested image, else FILE_gradcam.png); "
              "existing files are kept (-2, -3, ... added).")
@json_option
@pass_db
def predict(database: Database, paths, bodypart_run, fracture_run, gradcam_dir, json_mode):
    """Say which bone each X-ray shows and whether it looks abnormal (MURA's sense: fracture,
    hardware or another finding). PATH is an image, or a folder holding one study's views.

    \b
    Examples:
      bonedb predict xray.png
      bonedb predict MURA-v1.1/valid/XR_HUMERUS/patient11186/study1_positive --gradcam heatmaps/
    """
    # No file a model could read (a decompression bomb, say): refused at once, before any model loads.
    prediction = refused_outright(list(paths)) or Predictor(database.engine, bodypart_run, fracture_run).predict(
        list(paths), gradcam_dir)
    if json_mode:
        for line in prediction_json_lines(prediction):  # a stream: one line per image, then per study
            click.echo(line)
    else:
        _human(prediction)
        if prediction.warning:  # --json carries it on each image line, as synthetic_data
            click.echo(f"warning: {prediction.warning}", err=True)
    for image in prediction.images:
        if image.error:
            click.echo(f"error: {image.error}", err=True)
    if prediction.failed:
        sys.exit(1)


def _human(prediction: Prediction) -> None:
    rows = [{"image": i.path, "part": i.part or "", "p_part": i.part_probability,
             "p_abnormal": i.abnormal_probability, "decision": i.decision or "", "gradcam": i.gradcam or ""}
            for i in prediction.images if not i.error]
    if rows:
        print_table(rows)
    for study in prediction.studies:
        if study.abnormal_probability is not None:
            click.echo(f"study {study.study}: {study.part}, {plural(study.images, 'view')}, mean p(abnormal) "
                       f"{study.abnormal_probability:.3f} -> {study.decision}")
