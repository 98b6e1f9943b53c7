"""`bonedb synth`: a synthetic MURA to build, test and demonstrate without the real data."""

from __future__ import annotations

from pathlib import Path

import click

from boneclf.data.synth import synth_mura
from boneclf.results import plural
from boneclf.vocabulary import BODY_PARTS

from .options import json_option, parts_option
from .output import emit, progress_for


@click.command()
@click.argument("out", type=click.Path(path_type=Path, file_okay=False))
@click.option("--patients", default=60, show_default=True, help="Number of patients (train and valid together).")
@parts_option("Body parts, e.g. humerus,shoulder. Default: all seven.")
@click.option("--size", default=128, show_default=True, help="Image height in pixels (width varies, as in MURA).")
@click.option("--positive-rate", default=0.4, show_default=True, help="Share of abnormal studies.")
@click.option("--seed", default=0, show_default=True, help="Same seed, same files, byte for byte.")
@json_option
def synth(out, patients, parts, size, positive_rate, seed, json_mode):
    """Write a synthetic dataset in MURA v1.1's exact layout under OUT/MURA-v1.1/.

    Each body part has its own bone shape and abnormal studies show a visible break, so
    classifiers can learn both tasks; the CSVs have MURA's quirks (no header, CRLF).

    \b
    Example:
      bonedb synth demo-data --patients 200 --parts humerus,shoulder --size 96
    """
    report = synth_mura(out, patients=patients, parts=parts or BODY_PARTS, size=size,
                        positive_rate=positive_rate, seed=seed, progress=progress_for(json_mode))

    def human(counts):
        click.echo(f"wrote {plural(counts.images, 'image')}, {plural(counts.studies, 'study', 'studies')}, "
                   f"{plural(counts.patients, 'patient')} "
                   f"({counts.multi_part_patients} with several body parts) to {out}/MURA-v1.1")
        click.echo(f"next: bonedb db upgrade && bonedb ingest {out}")

    emit(report.counts(), json_mode, human)
