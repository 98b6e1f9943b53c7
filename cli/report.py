"""`bonedb report`: one HTML file about one or more runs."""

from __future__ import annotations

from pathlib import Path

import click

from .context import Database, pass_db


@click.command()
@click.argument("run_ids", type=int, nargs=-1, required=True)
@click.option("-o", "--output", type=click.Path(path_type=Path, dir_okay=False), default="report.html",
              show_default=True, help="The HTML file to write.")
@pass_db
def report(database: Database, run_ids, output):
    """One self-contained HTML report (pictures embedded, opens offline) on runs RUN_IDS.

    Dataset and split summary, learning curves, confusion matrices, ROC curves, per-part
    study-level kappa with intervals, a comparison table, and a Grad-CAM gallery of true and false
    positives and negatives. Runs without a test evaluation are evaluated first.

    \b
    Example:
      bonedb report 3 4 5 -o report.html
    """
    from boneclf.workflows.report import build_report

    path = build_report(database.engine, list(run_ids), output)
    click.echo(f"wrote {path}")
