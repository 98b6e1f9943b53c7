"""`bonedb runs` and `bonedb evaluate`: the training runs recorded in the database, and their scores."""

from __future__ import annotations

import json

import click

from boneclf.ml.evaluation import SUBSETS, EvaluationResult, compare_runs, evaluate_run, latest_result
from boneclf.ml.metrics import format_interval, format_report
from boneclf.ml.training_data import LABEL_SOURCES
from boneclf.store.provenance import describe_version
from boneclf.store.runs import STATUSES, get_run, list_runs

from .context import Database, pass_db
from .options import json_option
from .output import emit, print_csv, print_json, print_table


@click.group()
def runs():
    """List, show and compare training runs.

    \b
    Example:
      bonedb runs list --stage fracture
    """


@runs.command("list")
@click.option("--stage", type=click.Choice(["bodypart", "fracture"]), help="Only runs of this stage.")
@click.option("--status", type=click.Choice(STATUSES), help="Only runs with this status.")
@json_option
@pass_db
def list_(database: Database, stage, status, json_mode):
    """Every run with its status and headline validation figures.

    \b
    Example:
      bonedb runs list --stage fracture
    """
    records = list_runs(database.engine, stage=stage, status=status)
    emit(records, json_mode, lambda rs: print_table(
        [{"id": r.id, "stage": r.stage, "parts": ",".join(r.parts), "arch": r.architecture, "split": r.split_name,
          "status": r.status, "started": f"{r.started_at:%Y-%m-%d %H:%M}", "validation": r.headline()}
         for r in rs]))


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
    run = get_run(database.engine, run_id)
    evaluation = latest_result(database.engine, run, None)
    if json_mode:
        print_json({**run.to_dict(), "latest_evaluation": evaluation})
        return
    for key in ("id", "stage", "architecture", "split_name", "split_hash", "status", "host", "tf_version",
                "artifact_dir", "error"):
        click.echo(f"{key:13s} {getattr(run, key) if getattr(run, key) is not None else ''}")
    click.echo(f"{'parts':13s} {', '.join(run.parts)}")
    click.echo(f"{'labels':13s} the split's pinned labels, {describe_version(run.label_version)}")
    for key in ("started_at", "finished_at"):
        value = getattr(run, key)
        click.echo(f"{key:13s} {value:%Y-%m-%d %H:%M:%S}" if value else f"{key:13s}")
    click.echo(f"{'image spec':13s} {json.dumps(run.image_spec, sort_keys=True)}")
    click.echo(f"{'parameters':13s} {json.dumps(run.parameters, sort_keys=True)}")
    click.echo(f"{'validation':13s} {run.headline()}")
    if evaluation is not None:
        click.echo(f"{'evaluated':13s} on {evaluation.subset} (evaluation {evaluation.evaluation_id}) "
                   f"{scored_against(evaluation)}: `bonedb evaluate {run_id}` prints it in full")


def scored_against(evaluation: EvaluationResult) -> str:
    """Which labels and split an evaluation scored against, in words."""
    if evaluation.labels is None:
        return "against the labels of its day (not recorded)"
    which = "the split's pinned labels" if evaluation.labels == "pinned" else "today's labels"
    return f"against {which}, {describe_version(evaluation.label_version)}, split hash {evaluation.split_hash}"


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
    if csv_mode:
        print_csv(rows)
        return
    emit(rows, json_mode, print_table)


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
    with bootstrap 95% intervals over studies. Per body part and overall; stored with the run,
    with the split hash and which labels (pinned or current, and their label version) it used.

    \b
    Examples:
      bonedb evaluate 3 --subset test
      bonedb evaluate 3 --labels current      # against today's labels, after a relabel
    """
    result = evaluate_run(database.engine, run_id, subset, labels)
    emit(result, json_mode, _human_evaluation)


def _human_evaluation(result: EvaluationResult) -> None:
    overall = result.overall
    changes = result.label_changes
    if changes is not None and changes.changed:
        advice = ("scored against them (pinned); `--labels current` scores against today's"
                  if result.labels == "pinned" else "scored against today's labels (--labels current)")
        click.echo(f"warning: {changes.describe()}; {advice}", err=True)
    click.echo(f"run {result.run_id} ({result.stage}, {result.architecture}) on the {result.subset} subset, "
               f"{scored_against(result)}")
    if result.stage == "bodypart":
        click.echo(format_report(overall["report"], overall["accuracy"]))
        click.echo(f"accuracy {overall['accuracy']:.3f} (95% CI {format_interval(overall['accuracy_ci'])}), "
                   f"{overall['n']} images")
        _confusion(overall["confusion"], overall["class_names"])
    else:
        click.echo(format_report(overall["image"]["report"], overall["image"]["accuracy"]))
        print_table(result.part_rows())
        _confusion(overall["image"]["confusion"], ["normal", "abnormal"])
    for path in result.skipped_images:
        click.echo(f"skipped (cannot decode): {path}", err=True)


def _confusion(matrix, names) -> None:
    click.echo("confusion matrix (rows: truth, columns: prediction)")
    print_table([{"truth": name, **{n: v for n, v in zip(names, row)}} for name, row in zip(names, matrix)])
