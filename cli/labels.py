"""`bonedb labels`: the steward's label loop. Find the studies most likely mislabelled, decide, apply."""

from __future__ import annotations

import click

from boneclf.store.label_audits import AuditRecord, SuspectRow, get_audit, list_audits, suspects
from boneclf.vocabulary import label_word

from .context import Database, pass_db
from .options import json_option, model_options, parts_option, run_options
from .output import emit, print_json, print_table, progress_for

_LABELS = {"0": 0, "1": 1, "normal": 0, "abnormal": 1}


@click.group("labels")
def labels():
    """The label loop: rank studies by how likely their label is wrong, then change labels by review.

    \b
    Examples:
      bonedb labels suspects mura-v1.1 --parts humerus --folds 5 --arch cnn --weights none --image-size 64
      bonedb labels audits
      bonedb labels show 1 --top 50
      bonedb labels set mura-v1.1 patient00001 humerus 1 1 --reason "plate visible on the lateral view" --audit 1
    """


@labels.command("suspects")
@click.argument("dataset")
@parts_option("Body parts to audit. Default: all of the dataset's.")
@click.option("--folds", default=5, show_default=True, help="Models trained; each scores the studies it never saw.")
@model_options(epochs_help="Epochs per fold.", arch_help="Default: densenet121, as `bonedb train` stage 2.")
@run_options(seed_help="Seed for the folds, weights and shuffling.", runs_help="Where each fold's run folder goes.")
@click.option("--top", default=20, show_default=True, help="Studies shown (--json: all of them).")
@json_option
@pass_db
def suspects_(database: Database, dataset, parts, folds, arch, weights, image_size, epochs, head_epochs, batch_size,
              lr, seed, augment, patience, runs_dir, cache_dir, no_tensorboard, top, json_mode):
    """Rank DATASET's studies by how likely their label is wrong, with out-of-fold predictions and cleanlab.

    Studies are divided into --folds folds by leak group (a patient across parts, with copies of
    one picture), and one model per fold is trained on the others: an ordinary recorded run on
    split audit-<id>-fold-<k>. Each study's probability comes from the model that never saw it
    (the mean over its images), and cleanlab ranks the studies, most suspicious first. The audit
    is stored (`bonedb labels audits`). The same command again continues an interrupted audit:
    finished folds are reused and an interrupted one resumes from its last epoch.

    \b
    Examples:
      bonedb labels suspects mura-v1.1 --parts humerus,shoulder
      bonedb labels suspects mura-v1.1 --folds 3 --arch cnn --weights none --image-size 64 --epochs 15 --json
    """
    from boneclf.ml.label_audit import audit_labels
    from boneclf.ml.train_config import TrainConfig

    config = TrainConfig(stage="fracture", split="", parts=parts, arch=arch, weights=weights, image_size=image_size,
                         epochs=epochs, head_epochs=head_epochs, batch_size=batch_size, lr=lr, seed=seed,
                         augment=augment, patience=patience, runs_dir=runs_dir, cache_dir=cache_dir,
                         tensorboard=not no_tensorboard)
    result = audit_labels(database.engine, dataset, config, folds=folds, progress=progress_for(json_mode),
                          verbose=0 if json_mode else 2)
    _caution(result.suspects)
    if json_mode:
        print_json([_json_row(result.audit.id, row) for row in result.suspects])
        return
    for fold in result.folds:
        click.echo(f"fold {fold.fold}: run {fold.run_id} {fold.how} on split {fold.split}, scored {fold.studies} "
                   "studies")
    if result.reused:
        click.echo(f"label audit {result.audit.id} had finished with these options on these labels: shown as stored")
    _describe(result.audit)
    _table(result.suspects[:top])


@labels.command("show")
@click.argument("audit", type=int)
@click.option("--top", default=20, show_default=True, help="Studies shown (--json: all of them).")
@json_option
@pass_db
def show(database: Database, audit, top, json_mode):
    """The studies of label audit AUDIT, most suspicious first.

    \b
    Example:
      bonedb labels show 1 --top 50
    """
    record = get_audit(database.engine, audit)
    rows = suspects(database.engine, audit)
    _caution(rows)
    if json_mode:
        print_json([_json_row(audit, row) for row in rows])
        return
    _describe(record)
    _table(rows[:top])


@labels.command("audits")
@click.option("--dataset", help="Only this dataset's audits.")
@json_option
@pass_db
def audits(database: Database, dataset, json_mode):
    """Stored label audits: dataset, parts, folds, the runs, the label version scored, status.

    \b
    Example:
      bonedb labels audits --dataset mura-v1.1
    """
    emit(list_audits(database.engine, dataset), json_mode, lambda found: print_table([
        {"id": a.id, "dataset": a.dataset, "parts": a.parts, "folds": a.folds,
         "runs": ",".join("-" if r is None else str(r) for r in a.runs), "labels": _version(a.label_version),
         "studies": a.studies, "status": a.status, "created": f"{a.created_at:%Y-%m-%d %H:%M}", "method": a.method}
        for a in found]))


@labels.command("set")
@click.argument("dataset")
@click.argument("patient")
@click.argument("part")
@click.argument("study")
@click.argument("label")
@click.option("--reason", required=True, metavar="TEXT", help="Why: what the pictures show. History keeps it.")
@click.option("--audit", "audit_id", type=int, metavar="ID", help="The label audit that flagged the study.")
@click.option("--reviewer", metavar="NAME", help="Who decides. Default: the operating-system user.")
@json_option
@pass_db
def set_(database: Database, dataset, patient, part, study, label, reason, audit_id, reviewer, json_mode):
    """Change the label of study PATIENT PART STUDY of DATASET to LABEL (1 or abnormal, 0 or normal).

    The change is logged like an ingest's relabel (`bonedb log`: command "labels set"; the
    dataset's label version moves to it) and kept in `bonedb history` with reason "review", the
    reviewer, the reason and the audit. Splits keep the labels they pinned (`bonedb split create
    NEW --from OLD` re-bases one). Another decision reverses it; history keeps both. A later
    ingest whose files disagree keeps the decision and reports the conflict.

    \b
    Examples:
      bonedb labels set mura-v1.1 patient00001 humerus 1 1 --reason "screw visible" --audit 1
      bonedb labels set mura-v1.1 patient00001 humerus study1 normal --reason "artefact, not a break" --reviewer ann
    """
    from boneclf.data.label_decisions import set_label

    number = study.lower().removeprefix("study")
    if not number.isdigit():
        raise click.BadParameter(f"{study!r}: a study number, e.g. 1 or study1", param_hint="STUDY")
    if label.lower() not in _LABELS:
        raise click.BadParameter(f"{label!r}: 1 or abnormal, 0 or normal", param_hint="LABEL")
    decision = set_label(database.engine, dataset, patient, part.lower(), int(number), _LABELS[label.lower()],
                         note=reason, reviewer=reviewer, audit_id=audit_id)
    emit(decision, json_mode, lambda d: click.echo(d.describe()))


def _json_row(audit_id: int, row: SuspectRow) -> dict:
    return {"audit": audit_id, "rank": row.rank, "score": row.score, "flagged": row.flagged, "dataset": row.dataset,
            "patient": row.patient, "part": row.part, "study": row.study, "label": row.label,
            "probability": row.probability, "fold": row.fold, "current_label": row.current_label}


def _caution(rows: list[SuspectRow]) -> None:
    """Say so, on stderr, when the fold models learned too little for the ranking to mean much."""
    from boneclf.ml.label_ranking import caution

    found = caution([r.label for r in rows], [r.probability for r in rows])
    if found:
        click.echo(f"warning: {found}", err=True)


def _version(version: int | None) -> str:
    return "before the log" if version is None else f"as of log {version}"


def _describe(audit: AuditRecord) -> None:
    click.echo(f"label audit {audit.id} of {audit.dataset!r} ({','.join(audit.parts)}; {audit.folds} folds, runs "
               f"{','.join(str(r) for r in audit.runs)}; labels {_version(audit.label_version)}; {audit.method}): "
               f"{audit.studies} studies, most suspicious first")


def _table(rows: list[SuspectRow]) -> None:
    print_table([
        {"rank": r.rank, "score": round(r.score, 4), "flagged": "yes" if r.flagged else "", "patient": r.patient,
         "part": r.part, "study": r.study, "label": f"{r.label} ({label_word(r.label)})",
         "p(abnormal)": round(r.probability, 3), "today": "" if r.current_label == r.label else r.current_label}
        for r in rows
    ])

