"""`bonedb synth`: a synthetic MURA to build, test and demonstrate without the real data."""

from __future__ import annotations

from pathlib import Path

import click

from boneclf.bodyparts import parse_parts
from boneclf.synth import synth_mura
from cli.main import cli
from cli.output import print_json, progress_for


@cli.command()
@click.argument("out", type=click.Path(path_type=Path, file_okay=False))
@click.option("--patients", default=60, show_default=True, help="Number of patients (train and valid together).")
@click.option("--parts", metavar="PART,PART", help="Body parts, e.g. humerus,shoulder. Default: all seven.")
@click.option("--size", default=128, show_default=True, help="Image height in pixels (width varies, as in MURA).")
@click.option("--positive-rate", default=0.4, show_default=True, help="Share of abnormal studies.")
@click.option("--seed", default=0, show_default=True, help="Same seed, same files, byte for byte.")
@click.option("--json", "json_mode", is_flag=True, help="Print the counts as JSON.")
def synth(out, patients, parts, size, positive_rate, seed, json_mode):
    """Write a synthetic dataset in MURA v1.1's exact layout under OUT/MURA-v1.1/.

    Each body part has its own bone shape and abnormal studies show a visible break, so
    classifiers can learn both tasks; the CSVs have MURA's quirks (no header, CRLF).

    \b
    Example:
      bonedb synth demo-data --patients 200 --parts humerus,shoulder --size 96
      bonedb ingest demo-data
    """
    report = synth_mura(
        out, patients=patients, parts=parse_parts(parts), size=size,
        positive_rate=positive_rate, seed=seed, progress=progress_for(json_mode),
    )
    counts = report.counts()
    if json_mode:
        print_json(counts)
        return
    click.echo(
        f"wrote {counts['images']} images, {counts['studies']} studies, {counts['patients']} patients "
        f"({counts['multi_part_patients']} with several body parts) to {out}/MURA-v1.1"
    )
    click.echo(f"next: bonedb db upgrade && bonedb ingest {out}")
