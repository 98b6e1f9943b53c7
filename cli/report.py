"""`bonedb report`: one HTML file about one or more runs."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .context import Database, pass_db
from .options import json_option
from .output import emit


@click.command()
@click.argument("run_ids", type=int, nargs=-1, required=True)
@click.option("-o", "--output", type=click.Path(path_type=Path, dir_okay=False), default="report.html",
              show_default=True, help="The HTML file to write.")
@json_option
@pass_db
def report(database: Database, run_ids, output, json_mode):
    """One self-contained HTML report (pictures embedded, opens offline) on runs RUN_IDS.

    Dataset and split, a comparison table, learning curves, per-part study-level kappa with intervals
    and the studies (and leak groups) each rests on, beside the MURA baseline on MURA's own data
    (forest plot), study-level ROC, precision-recall and calibration per part, confusion matrices,
    and a Grad-CAM gallery per body part and outcome. Synthetic data (`bonedb synth`, `bonedb demo`)
    is called synthetic throughout. Runs without a test evaluation are evaluated first.

    A run that cannot be reported in full (no such run, failed, interrupted, files missing) is listed
    with its error in the report and on stderr; the report is still written, and the exit status is 1.

    \b
    Example:
      bonedb report 3 4 5 -o report.html
    """
    from boneclf.workflows.report import build_report

    result = build_report(database.engine, list(run_ids), output)
    emit(result, json_mode, _human)
    if result.problems:
        sys.exit(1)


def _human(result) -> None:
    synthetic = f" (synthetic data: {', '.join(result.synthetic)})" if result.synthetic else ""
    click.echo(f"wrote {result.path}{synthetic}")
    for problem in result.problems:
        click.echo(f"error: run {problem.run_id} ({problem.status}): {problem.error}", err=True)
