"""`bonedb runs` and `bonedb evaluate`: the training runs recorded in the database, and their scores."""

from __future__ import annotations

from pathlib import Path

import click

from boneclf.errors import BonedbError
from boneclf.ml.comparison import compare_runs, interval_verdict, synthetic_rows_note
from boneclf.ml.evaluation import SUBSETS, EvaluationResult, evaluate_run, latest_result
from boneclf.ml.metrics import format_interval, format_report
from boneclf.ml.run_folder import delete_runs, settle_dead_runs, settle_running
from boneclf.ml.training_data import LABEL_SOURCES
from boneclf.results import fmt, option_word, plural
from boneclf.scores import BinaryMetrics, MulticlassMetrics, metrics_from_dict
from boneclf.store.provenance import describe_version
from boneclf.store.runs import STATUSES, get_run, list_runs
from boneclf.vocabulary import FRACTURE_CLASSES, STAGES

from .context import Database, pass_db
from .options import confirmer, json_option, yes_option
from .output import emit, print_csv, print_json, print_table


@click.group()
def runs():
    """List, show and compare training runs.

    \b
    Example:
      bonedb runs list --stage fracture
    """


@runs.command("list")
@click.option("--stage", type=click.Choice(STAGES), help="Only runs of this stage.")
@click.option("--status", type=click.Choice(STATUSES), help="Only runs with this status.")
@click.option("--latest", is_flag=True, help="Only the newest run that matches (for scripts, with --ids or --json).")
@click.option("--ids", "ids_only", is_flag=True, help="Print only the run ids, one per line (for scripts).")
@json_option
@pass_db
def list_(database: Database, stage, status, latest, ids_only, json_mode):
    """Every run with its status and validation figures (stage 1: body-part accuracy; stage 2: image
    accuracy and MURA's study kappa).

    \b
    Examples:
      bonedb runs list --stage fracture
      bonedb evaluate "$(bonedb runs list --stage fracture --status finished --latest --ids)"
    """
    settle_running(database.engine)  # a run whose process is gone shows as interrupted, not running
    records = list_runs(database.engine, stage=stage, status=status, latest=latest)
    if latest and not records:  # a script asked for one id: none is an error, not an empty line
        wanted = " ".join(f"{name} {value}" for name, value in (("stage", stage), ("status", status)) if value)
        raise BonedbError(f"no run{' with ' + wanted if wanted else ''}: `bonedb runs list` shows the runs")
    if ids_only:
        for record in records:
            click.echo(record.id)
        return
    emit(records, json_mode, lambda rs: print_table([_row(r) for r in rs]))


def _row(run) -> dict:
    metrics = metrics_from_dict(run.metrics)
    accuracy, kappa = None, None
    if isinstance(metrics, BinaryMetrics):
        accuracy, kappa = metrics.image.accuracy, metrics.study.kappa
    elif metrics is not None:
        accuracy = metrics.accuracy
    return {"id": run.id, "stage": run.stage, "parts": ",".join(run.parts), "arch": run.architecture,
            "split": run.split_name, "data": run.data or "", "status": run.status,
            "started": f"{run.started_at:%Y-%m-%d %H:%M}",
            "val_image_accuracy": accuracy, "val_study_kappa": kappa}


@runs.command()
@click.argument("run_id", type=int)
@json_option
@pass_db
def show(database: Database, run_id, json_mode):
    """Everything recorded about run RUN_ID.

    \b
    Example:
      bonedb runs show 3
    """
    [run] = settle_dead_runs(database.engine, [get_run(database.engine, run_id)])
    evaluation = latest_result(database.engine, run, None)
    if json_mode:
        print_json({**run.to_dict(), "latest_evaluation": evaluation})
        return
    lines = [("run", run.id), ("stage", run.stage), ("parts", ", ".join(run.parts)),
             ("architecture", run.architecture), ("status", run.status), ("error", run.error),
             ("split", f"{run.split_name} (content hash {run.split_hash[:16]})"),
             ("data", f"{run.data}, dataset {run.dataset}" if run.data else None),
             ("labels", f"the split's pinned labels, {describe_version(run.label_version)}"),
             ("started", f"{run.started_at:%Y-%m-%d %H:%M:%S}"),
             ("finished", f"{run.finished_at:%Y-%m-%d %H:%M:%S}" if run.finished_at else None),
             ("host", f"{run.host}, TensorFlow {run.tf_version}"), ("files", run.artifact_dir),
             ("image spec", ", ".join(f"{k} {option_word(v, '-')}" for k, v in sorted(run.image_spec.items()))),
             ("validation", run.headline() or None)]
    for key, value in lines:
        if value is not None:
            click.echo(f"{key:13s} {value}")
    synthetic = run.synthetic_note()
    if synthetic:
        click.echo(f"note: {synthetic}")
    click.echo("parameters")
    for key, value in sorted(run.parameters.items()):
        click.echo(f"  {key:15s} {option_word(value, '-')}")
    if evaluation is not None:
        click.echo(f"{'evaluated':13s} on {evaluation.subset} (evaluation {evaluation.evaluation_id}) "
                   f"{scored_against(evaluation)}: `bonedb evaluate {run_id}` prints it in full")


def scored_against(evaluation: EvaluationResult) -> str:
    """Which labels and split an evaluation scored against, in words."""
    if evaluation.labels is None:
        return "against the labels of its day (not recorded)"
    which = "the split's pinned labels" if evaluation.labels == "pinned" else "today's labels"
    return f"against {which}, {describe_version(evaluation.label_version)}, split hash {evaluation.split_hash}"


@runs.command("import")
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@json_option
@pass_db
def import_(database: Database, run_dir, json_mode):
    """Record RUN_DIR, a run trained with `bonedb train --from-export`, in this database, on the stored
    split with the same content hash (refused when there is none). The run keeps its folder;
    `bonedb evaluate` and `bonedb predict` then work on it like on any other run.

    \b
    Example:
      bonedb runs import runs/hs-v1-fracture-all-20260101-120000
    """
    from boneclf.ml.run_import import import_run

    run = import_run(database.engine, run_dir)
    emit(run, json_mode, lambda r: click.echo(f"recorded {r.artifact_dir} as run {r.id} ({r.stage} "
                                              f"{r.architecture} on {','.join(r.parts)}, split {r.split_name}); "
                                              f"{r.headline()}"))


@runs.command("delete")
@click.argument("run_ids", type=int, nargs=-1, required=True)
@click.option("--force", is_flag=True, help="Also delete runs marked running whose process is gone.")
@yes_option("deleting")
@json_option
@pass_db
def delete(database: Database, run_ids, force, yes, json_mode):
    """Delete runs RUN_IDS with their evaluations and their folders (runs/<id>/). Asks first on a
    terminal; elsewhere needs --yes. A split can be deleted once no run uses it.

    \b
    Example:
      bonedb runs delete 3 4 --yes
    """
    result = delete_runs(database.engine, list(run_ids), force=force, confirm=confirmer(yes))

    def human(r):
        click.echo(f"deleted run(s) {', '.join(map(str, r.runs))} and {plural(r.evaluations, 'evaluation')}")
        for folder in r.folders_removed:
            click.echo(f"removed {folder}")
        for folder in r.folders_left:
            click.echo(f"left in place {folder}")

    emit(result, json_mode, human)


@runs.command()
@click.argument("run_ids", type=int, nargs=-1, required=True)
@json_option
@click.option("--csv", "csv_mode", is_flag=True, help="Print the comparison as CSV (for spreadsheets).")
@pass_db
def compare(database: Database, run_ids, json_mode, csv_mode):
    """One row per run with its latest test evaluation (else validation): the paper's model comparison,
    with intervals.

    \b
    Example:
      bonedb runs compare 3 4 5
    """
    rows = compare_runs(database.engine, list(run_ids))
    note = synthetic_rows_note(rows)
    if csv_mode:
        print_csv([_compared(row) for row in rows])
        if note:  # stdout stays plain CSV; each row's data column says it too
            click.echo(f"note: {note}", err=True)
        return
    emit(rows, json_mode, lambda found: print_table([_compared(row) for row in found]))
    if not json_mode:
        for line in ([note] if note else []) + interval_verdict(rows):
            click.echo(f"note: {line}")


def _compared(row) -> dict:
    """A comparison row as the table shows it: the raw interval is already in its formatted column."""
    shown = row.to_dict()
    shown.pop("interval")
    return shown


@click.command("evaluate")
@click.argument("run_id", type=int)
@click.option("--subset", type=click.Choice(SUBSETS), default="test", show_default=True,
              help="Which subset of the run's split to score.")
@click.option("--labels", type=click.Choice(LABEL_SOURCES), default="pinned", show_default=True,
              help="pinned: the labels the split pinned when it was made (the ones the run trained with); "
              "current: today's labels of the same studies.")
@json_option
@pass_db
def evaluate(database: Database, run_id, subset, labels, json_mode):
    """Score finished run RUN_ID on its split's test subset, the way MURA is scored.

    Image level: accuracy, per-class precision/recall/F1, ROC AUC, confusion matrix. Study level
    (mean of a study's image probabilities, abnormal above 0.5): accuracy, Cohen's kappa and AUROC
    with bootstrap 95% intervals over studies (over leak groups where duplicate groups join studies:
    copies of one picture are resampled together). Warns when the subset holds copies of its own
    pictures. Per body part and overall; stored with the run,
    with the split hash and which labels (pinned or current, and their label version) it used.

    \b
    Examples:
      bonedb evaluate 3 --subset test
      bonedb evaluate 3 --labels current      # against today's labels, after a relabel
    """
    result = evaluate_run(database.engine, run_id, subset, labels)
    emit(result, json_mode, print_evaluation)


def print_evaluation(result: EvaluationResult) -> None:
    overall = result.overall
    changes = result.label_changes
    if changes is not None and changes.changed:
        advice = ("scored against them (pinned); `--labels current` scores against today's"
                  if result.labels == "pinned" else "scored against today's labels (--labels current)")
        click.echo(f"warning: {changes.describe()}; {advice}", err=True)
    copies = result.copies_warning()
    if copies:
        click.echo(f"warning: {copies}", err=True)
    click.echo(f"run {result.run_id} ({result.stage}, {result.architecture}) on the {result.subset} subset, "
               f"{scored_against(result)}")
    synthetic = result.synthetic_note()
    if synthetic:
        click.echo(f"note: {synthetic}")
    if isinstance(overall, MulticlassMetrics):
        click.echo(format_report(overall.report, overall.accuracy))
        click.echo(f"accuracy {fmt(overall.accuracy)} (95% CI {format_interval(overall.accuracy_ci)}), "
                   f"{plural(overall.n, 'image')}")
        _confusion(overall.confusion, overall.class_names)
    else:
        click.echo(format_report(overall.image.report, overall.image.accuracy))
        print_table(result.part_rows())
        _confusion(overall.image.confusion, FRACTURE_CLASSES)
    for path in result.skipped_images:
        click.echo(f"skipped (cannot decode): {path}: {result.skip_reasons.get(path, 'not a readable image')}",
                   err=True)


def _confusion(matrix, names) -> None:
    click.echo("confusion matrix (rows: truth, columns: prediction)")
    print_table([{"truth": name, **{n: v for n, v in zip(names, row)}} for name, row in zip(names, matrix)])
