"""`bonedb report` and `bonedb demo`."""

from __future__ import annotations

from pathlib import Path

import click

from cli.main import cli
from cli.output import print_json, progress_for


@cli.command()
@click.argument("run_ids", type=int, nargs=-1, required=True)
@click.option("-o", "--output", type=click.Path(path_type=Path, dir_okay=False), default="report.html",
              show_default=True)
@click.pass_obj
def report(obj, run_ids, output):
    """One self-contained HTML report (pictures embedded, opens offline) on runs RUN_IDS.

    Dataset and split summary, learning curves, confusion matrices, ROC curves, per-part
    study-level kappa with intervals, a comparison table, and a Grad-CAM gallery of true and false
    positives and negatives. Runs without a test evaluation are evaluated first.

    \b
    Example:
      bonedb report 3 4 5 -o report.html
    """
    from boneclf.report import build_report

    path = build_report(obj.engine, list(run_ids), output)
    click.echo(f"wrote {path}")


@cli.command()
@click.option("--workdir", type=click.Path(path_type=Path, file_okay=False), default="bonedb-demo", show_default=True,
              help="Holds everything: data, database (bonedb.sqlite), runs, exports, heatmaps, report.")
@click.option("--quick", is_flag=True, help="A tiny run (about a minute) that only shows the plumbing.")
@click.option("--json", "json_mode", is_flag=True)
@click.pass_context
def demo(ctx, workdir, quick, json_mode):
    """Run the whole pipeline on synthetic data, offline: synth, ingest, split, audit, export, train
    both stages, evaluate, predict with Grad-CAM, report. About 5 minutes on a 2-core CPU.

    Uses WORKDIR/bonedb.sqlite unless --database-url (or BONEDB_DATABASE_URL) is given.

    \b
    Example:
      bonedb demo --workdir bonedb-demo && cd bonedb-demo && bonedb runs list
    """
    from boneclf.demo import run_demo

    # The demo's default database lives in its work folder, not in the current one.
    url = ctx.find_root().params.get("database_url")
    say = (lambda message: None) if json_mode else click.echo
    summary = run_demo(workdir, database_url=url, quick=quick, say=say, progress=progress_for(json_mode))
    if json_mode:
        print_json(summary)
        return
    ci = summary["stage2_test_study_kappa_ci"]
    click.echo("")
    click.echo(f"stage 1 (body part), run {summary['bodypart_run']}: test accuracy {summary['stage1_test_accuracy']:.3f}")
    click.echo(f"stage 2 (normal/abnormal), run {summary['fracture_run']}: test image accuracy "
               f"{summary['stage2_test_image_accuracy']:.3f}, study kappa {summary['stage2_test_study_kappa']:.3f} "
               f"(95% CI {ci[0]:.3f} to {ci[1]:.3f})")
    click.echo(f"split audit: {'LEAKS FOUND' if summary['leaks'] else 'no leaks'}")
    click.echo(f"report:   {summary['report']}")
    click.echo(f"heatmaps: {summary['gradcam_dir']}")
    click.echo(f"database: {summary['database']}")
    if summary["try_next"]:
        click.echo(f"try:      {summary['try_next']}")
