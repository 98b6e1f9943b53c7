"""Split versions and their assignments; perceptual hashes for near-duplicate audits.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("images", recreate="never") as batch:
        batch.add_column(sa.Column(
            "perceptual_hash", sa.String(64), nullable=True,
            comment="difference hash of the picture (hex), robust to resizing and re-encoding",
        ))
    op.create_table(
        "split_versions",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("dataset_id", sa.Integer, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False,
                  comment="bonedb (made by split create) or source (the dataset's own)"),
        sa.Column("parameters", sa.Text, nullable=False, comment="JSON of the options that made it"),
        sa.Column("seed", sa.Integer, nullable=True),
        sa.Column("content_hash", sa.String(64), nullable=False,
                  comment="sha256 over sorted (image path, subset) pairs"),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_split_versions"),
        sa.ForeignKeyConstraint(["dataset_id"], ["datasets.id"], name="fk_split_versions_dataset_id_datasets",
                                ondelete="CASCADE"),
        sa.UniqueConstraint("name", name="uq_split_versions_name"),
    )
    op.create_index("ix_split_versions_dataset_id", "split_versions", ["dataset_id"])
    op.create_table(
        "split_assignments",
        sa.Column("split_id", sa.Integer, nullable=False),
        sa.Column("image_id", sa.Integer, nullable=False),
        sa.Column("subset", sa.String(8), nullable=False, comment="train, val or test"),
        sa.PrimaryKeyConstraint("split_id", "image_id", name="pk_split_assignments"),
        sa.ForeignKeyConstraint(["split_id"], ["split_versions.id"],
                                name="fk_split_assignments_split_id_split_versions", ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["image_id"], ["images.id"],
                                name="fk_split_assignments_image_id_images", ondelete="CASCADE"),
    )
    op.create_index("ix_split_assignments_image_id", "split_assignments", ["image_id"])
    op.create_index("ix_split_assignments_split_id_subset", "split_assignments", ["split_id", "subset"])


def downgrade() -> None:
    op.drop_table("split_assignments")
    op.drop_table("split_versions")
    # "never": SQLite >= 3.35 drops a column in place; a table rebuild would break the per-bone views.
    with op.batch_alter_table("images", recreate="never") as batch:
        batch.drop_column("perceptual_hash")
