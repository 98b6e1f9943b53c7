"""Label audits: which studies look mislabelled, by out-of-fold predictions ranked with cleanlab; and review
decisions that change a label.

- `label_audits`: one audit of a dataset's labels (`bonedb labels suspects`): its parts, folds, training
  options, the label version it scored, the ranking method, and whether it finished.
- `label_audit_folds`: each fold's split (made for the audit, `audit-<id>-fold-<k>`) and the run trained on it.
- `label_audit_studies`: each study's label as scored, out-of-fold probability, label-quality score and rank
  (1 = most suspicious), and whether cleanlab flags it as a label issue.
- `label_history` gains `reviewer`, `note` and `audit_id`: a steward's `bonedb labels set` writes a history row
  with reason "review" (and a row in the ingest log, so the label version moves as after an ingest relabel).
  `audit_id` has no foreign key: history outlives the audit that flagged the study.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

# One line each, so that the lead can renumber at merge.
revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

LABEL_VERSION_COMMENT = (
    "label version: id of the latest ingest_log row that added or relabeled studies of the dataset "
    "when the labels were read (NULL: before the log)"
)


def upgrade() -> None:
    op.create_table(
        "label_audits",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("dataset_id", sa.Integer, nullable=False),
        sa.Column("parts", sa.JSON, nullable=False, comment="the body parts audited"),
        sa.Column("folds", sa.Integer, nullable=False, comment="models trained; each scores the studies it never saw"),
        sa.Column("parameters", sa.JSON, nullable=False, comment="the training options every fold's run shares"),
        sa.Column("label_version", sa.Integer, nullable=True, comment=LABEL_VERSION_COMMENT),
        sa.Column("method", sa.String(64), nullable=False, comment="how studies were ranked (cleanlab and version)"),
        sa.Column("status", sa.String(16), nullable=False, comment="running or finished"),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("finished_at", sa.DateTime, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_label_audits"),
        sa.ForeignKeyConstraint(["dataset_id"], ["datasets.id"], name="fk_label_audits_dataset_id_datasets",
                                ondelete="CASCADE"),
    )
    op.create_index("ix_label_audits_dataset_id", "label_audits", ["dataset_id"])
    op.create_table(
        "label_audit_folds",
        sa.Column("audit_id", sa.Integer, nullable=False),
        sa.Column("fold", sa.Integer, nullable=False),
        sa.Column("split_id", sa.Integer, nullable=True, comment="the fold's split: its test subset is the fold"),
        sa.Column("run_id", sa.Integer, nullable=True, comment="the run trained on it, once finished"),
        sa.PrimaryKeyConstraint("audit_id", "fold", name="pk_label_audit_folds"),
        sa.ForeignKeyConstraint(["audit_id"], ["label_audits.id"], name="fk_label_audit_folds_audit_id_label_audits",
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["split_id"], ["split_versions.id"],
                                name="fk_label_audit_folds_split_id_split_versions", ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["run_id"], ["training_runs.id"], name="fk_label_audit_folds_run_id_training_runs",
                                ondelete="SET NULL"),
    )
    op.create_table(
        "label_audit_studies",
        sa.Column("audit_id", sa.Integer, nullable=False),
        sa.Column("study_id", sa.Integer, nullable=False),
        sa.Column("fold", sa.Integer, nullable=False, comment="the fold whose model scored it"),
        sa.Column("label", sa.SmallInteger, nullable=False, comment="the study's label as scored (the fold's pinned)"),
        sa.Column("probability", sa.Float, nullable=False,
                  comment="out-of-fold probability of abnormal: mean of its images' probabilities"),
        sa.Column("score", sa.Float, nullable=False, comment="cleanlab label-quality score, 0..1: low is suspicious"),
        sa.Column("rank", sa.Integer, nullable=False, comment="1 = the most suspicious study of the audit"),
        sa.Column("flagged", sa.Boolean, nullable=False, comment="1: cleanlab's find_label_issues flags it"),
        sa.PrimaryKeyConstraint("audit_id", "study_id", name="pk_label_audit_studies"),
        sa.ForeignKeyConstraint(["audit_id"], ["label_audits.id"],
                                name="fk_label_audit_studies_audit_id_label_audits", ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["study_id"], ["studies.id"], name="fk_label_audit_studies_study_id_studies",
                                ondelete="CASCADE"),
    )
    op.create_index("ix_label_audit_studies_audit_id_rank", "label_audit_studies", ["audit_id", "rank"])
    with op.batch_alter_table("label_history", recreate="never") as batch:
        batch.add_column(sa.Column("reviewer", sa.String(128), nullable=True,
                                   comment="who decided, for a review (NULL: an ingest's relabel)"))
        batch.add_column(sa.Column("note", sa.Text, nullable=True, comment="why, in the reviewer's words"))
        batch.add_column(sa.Column("audit_id", sa.Integer, nullable=True,
                                   comment="the label audit that flagged the study, if one did"))


def downgrade() -> None:
    # "never": SQLite >= 3.35 drops a column in place; a table rebuild would break the per-bone views.
    with op.batch_alter_table("label_history", recreate="never") as batch:
        batch.drop_column("audit_id")
        batch.drop_column("note")
        batch.drop_column("reviewer")
    op.drop_table("label_audit_studies")
    op.drop_table("label_audit_folds")
    op.drop_table("label_audits")
