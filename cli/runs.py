"""`bonedb runs`: the training runs recorded in the database."""

from __future__ import annotations

import click

from boneclf.runs import get_run, latest_evaluation, list_runs, run_as_dict
from cli.main import cli
from cli.output import print_json, print_table


@cli.group()
def runs():
    """List, show and compare training runs."""


@runs.command("list")
@click.option("--stage", type=click.Choice(["bodypart", "fracture"]))
@click.option("--status", type=click.Choice(["running", "finished", "failed", "interrupted"]))
@click.option("--json", "json_mode", is_flag=True)
@click.pass_obj
def list_(obj, stage, status, json_mode):
    """Every run with its status and headline validation figure.

    \b
    Example:
      bonedb runs list --stage fracture
    """
    rows = list_runs(obj.engine, stage=stage, status=status)
    if json_mode:
        print_json(rows)
        return
    print_table([{"id": r["id"], "stage": r["stage"], "parts": ",".join(r["parts"]), "arch": r["architecture"],
                  "split": r["split_name"], "status": r["status"], "started": r["started_at"],
                  "val": _headline(r["metrics"])} for r in rows])


@runs.command()
@click.argument("run_id", type=int)
@click.option("--json", "json_mode", is_flag=True)
@click.pass_obj
def show(obj, run_id, json_mode):
    """Everything recorded about run RUN_ID.

    \b
    Example:
      bonedb runs show 3
    """
    data = run_as_dict(get_run(obj.engine, run_id))
    data["latest_evaluation"] = latest_evaluation(obj.engine, run_id)
    if json_mode:
        print_json(data)
        return
    for key in ("id", "stage", "parts", "architecture", "split_name", "split_hash", "status", "started_at",
                "finished_at", "host", "tf_version", "artifact_dir", "error"):
        click.echo(f"{key:13s} {data[key]}")
    click.echo(f"{'parameters':13s} {data['parameters']}")
    click.echo(f"{'val metrics':13s} {_headline(data['metrics'])}")


@runs.command()
@click.argument("run_ids", type=int, nargs=-1, required=True)
@click.option("--json", "json_mode", is_flag=True)
@click.pass_obj
def compare(obj, run_ids, json_mode):
    """One row per run with its latest test evaluation (else validation): the paper's model comparison,
    with intervals.

    \b
    Example:
      bonedb runs compare 3 4 5
    """
    rows = []
    for run_id in run_ids:
        run = run_as_dict(get_run(obj.engine, run_id))
        evaluation = latest_evaluation(obj.engine, run_id, "test") or latest_evaluation(obj.engine, run_id)
        rows.append(comparison_row(run, evaluation))
    if json_mode:
        print_json(rows)
    else:
        print_table(rows)


def comparison_row(run: dict, evaluation: dict | None) -> dict:
    row = {"run": run["id"], "stage": run["stage"], "arch": run["architecture"], "parts": ",".join(run["parts"]),
           "image_size": run["parameters"].get("image_size"), "scored_on": evaluation["subset"] if evaluation else "val"}
    overall = evaluation["overall"] if evaluation else run["metrics"] or {}
    if "image" in overall:
        study = overall["study"]
        row.update(image_acc=overall["image"]["accuracy"], image_auc=overall["image"]["auc"],
                   study_kappa=study["kappa"],
                   kappa_95ci=f"{study['kappa_ci'][0]:.3f}-{study['kappa_ci'][1]:.3f}" if "kappa_ci" in study else "",
                   study_auc=study["auc"])
    elif overall:
        row.update(accuracy=overall.get("accuracy"), kappa=overall.get("kappa"))
        if "accuracy_ci" in overall:
            row["accuracy_95ci"] = f"{overall['accuracy_ci'][0]:.3f}-{overall['accuracy_ci'][1]:.3f}"
    return row


def _headline(metrics) -> str:
    if not metrics:
        return ""
    if "image" in metrics:
        return f"acc {metrics['image']['accuracy']:.3f} kappa {metrics['study']['kappa']:.3f}"
    return f"acc {metrics.get('accuracy', float('nan')):.3f}"
