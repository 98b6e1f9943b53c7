"""Reviews: a steward's decision about a study's label or a duplicate group, with who and when.

A review never changes a label (a relabel still goes through ingest); it is a record beside it.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "reviews",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("study_id", sa.Integer, nullable=True, comment="the study reviewed (label decisions)"),
        # No foreign key: duplicate groups are recomputed wholesale (new ids); members keeps what was judged.
        sa.Column("group_id", sa.Integer, nullable=True,
                  comment="the duplicate group reviewed (duplicate decisions), id when reviewed"),
        sa.Column("members", sa.JSON, nullable=True, comment="image ids of the duplicate group when it was reviewed"),
        sa.Column("decision", sa.String(32), nullable=False,
                  comment="label confirmed, label disputed, duplicate confirmed or duplicate rejected"),
        sa.Column("label", sa.SmallInteger, nullable=True, comment="the study's label when it was reviewed"),
        sa.Column("note", sa.Text, nullable=True, comment="why (required when a label is disputed)"),
        sa.Column("reviewer", sa.String(128), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_reviews"),
        sa.ForeignKeyConstraint(["study_id"], ["studies.id"], name="fk_reviews_study_id_studies", ondelete="CASCADE"),
        sa.CheckConstraint("study_id IS NOT NULL OR group_id IS NOT NULL", name="ck_reviews_subject"),
    )
    op.create_index("ix_reviews_study_id", "reviews", ["study_id"])
    op.create_index("ix_reviews_group_id", "reviews", ["group_id"])


def downgrade() -> None:
    # The indexes go with the table (MySQL refuses to drop one a foreign key needs first).
    op.drop_table("reviews")
