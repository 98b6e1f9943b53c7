"""`bonedb demo`: the whole pipeline on synthetic data, offline."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .context import Database, pass_db
from .options import json_option
from .output import emit, progress_for


@click.command()
@click.option("--workdir", type=click.Path(path_type=Path, file_okay=False), default="bonedb-demo", show_default=True,
              help="Holds everything: data, database (bonedb.sqlite), runs, exports, heatmaps, report.")
@click.option("--quick", is_flag=True, help="A tiny run that only shows the plumbing (what the tests run); "
              "its models learn little.")
@json_option
@pass_db
def demo(database: Database, workdir, quick, json_mode):
    """Run the whole pipeline on synthetic data, offline: synth, ingest, split, audit, export, train
    both stages, evaluate, predict with Grad-CAM, report.

    Measured once on the default settings: 12 min 2 s on a 2-core machine busy with other jobs
    (load average 7 to 8; the demo used 250 s of CPU). --quick only shows the plumbing.

    Uses WORKDIR/bonedb.sqlite unless `bonedb --database-url URL demo` (or BONEDB_DATABASE_URL)
    names another database.

    \b
    Example:
      bonedb demo --workdir bonedb-demo && cd bonedb-demo && bonedb runs list
    """
    from boneclf.workflows.demo import run_demo

    # The demo's default database lives in its work folder, not in the current one
    # (--database-url and BONEDB_DATABASE_URL both arrive as an explicit URL).
    url = database.url if database.explicit else None
    say = (lambda message: None) if json_mode else click.echo
    # Keras' per-epoch progress bar on a terminal only (training is most of the demo's time); quiet otherwise.
    verbose = "auto" if sys.stdout.isatty() and not json_mode else 0
    summary = run_demo(workdir, database_url=url, quick=quick, say=say, progress=progress_for(json_mode),
                       verbose=verbose)
    emit(summary, json_mode, _human)


def _human(summary) -> None:
    ci = summary.stage2_test_study_kappa_ci
    click.echo("")
    click.echo(f"stage 1 (body part), run {summary.bodypart_run}: test accuracy {summary.stage1_test_accuracy:.3f}")
    click.echo(f"stage 2 (normal/abnormal), run {summary.fracture_run}: test image accuracy "
               f"{summary.stage2_test_image_accuracy:.3f}, study kappa {summary.stage2_test_study_kappa:.3f} "
               f"(95% CI {ci[0]:.3f} to {ci[1]:.3f})")
    click.echo("(figures on synthetic pictures drawn by `bonedb synth`: they show the pipeline works, and describe "
               "no real radiographs)")
    click.echo(f"split audit: {'LEAKS FOUND' if summary.leaks else 'no leaks'}")
    click.echo(f"report:   {summary.report}")
    click.echo(f"heatmaps: {summary.gradcam_dir}")
    click.echo(f"database: {summary.database}")
    if summary.try_next:
        click.echo(f"try:      {summary.try_next}")
