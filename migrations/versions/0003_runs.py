"""Training runs and their evaluations.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "training_runs",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("stage", sa.String(16), nullable=False, comment="bodypart or fracture"),
        sa.Column("parts", sa.String(255), nullable=False, comment="comma-separated body parts the model covers"),
        sa.Column("architecture", sa.String(32), nullable=False),
        sa.Column("parameters", sa.Text, nullable=False, comment="JSON of every training option"),
        sa.Column("split_id", sa.Integer, nullable=False),
        sa.Column("split_name", sa.String(128), nullable=False),
        sa.Column("split_hash", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False, comment="running, finished, failed or interrupted"),
        sa.Column("started_at", sa.DateTime, nullable=False),
        sa.Column("finished_at", sa.DateTime, nullable=True),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("tf_version", sa.String(32), nullable=False),
        sa.Column("metrics", sa.Text, nullable=True, comment="JSON of the final validation metrics"),
        sa.Column("artifact_dir", sa.String(1024), nullable=False),
        sa.Column("error", sa.Text, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_training_runs"),
        sa.ForeignKeyConstraint(["split_id"], ["split_versions.id"],
                                name="fk_training_runs_split_id_split_versions", ondelete="RESTRICT"),
    )
    op.create_index("ix_training_runs_split_id", "training_runs", ["split_id"])
    op.create_table(
        "evaluations",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("run_id", sa.Integer, nullable=False),
        sa.Column("subset", sa.String(8), nullable=False),
        sa.Column("metrics", sa.Text, nullable=False,
                  comment="JSON: image- and study-level metrics per part and overall"),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_evaluations"),
        sa.ForeignKeyConstraint(["run_id"], ["training_runs.id"], name="fk_evaluations_run_id_training_runs",
                                ondelete="CASCADE"),
    )
    op.create_index("ix_evaluations_run_id", "evaluations", ["run_id"])


def downgrade() -> None:
    op.drop_table("evaluations")
    op.drop_table("training_runs")
