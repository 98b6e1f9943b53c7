"""Duplicate groups, a rotation-robust near-duplicate hash, file formats, deliberate ingest exclusions.

- `duplicate_groups` / `duplicate_members`: images clustered as exact (same bytes) or near
  duplicates (same picture after flips, rotations, crops, rescaling, re-encoding), with the method
  and threshold that made each group. Splits keep a group in one subset.
- `images.near_hash`: the 64-bit hash the near-duplicate groups are made from;
  `images.file_format`: the format read from the file's bytes (not its name).
- `ingest_exclusions`: files an ingest left out on purpose, with the reason, so that
  `bonedb audit dataset` can tell them from files nobody ever saw.
- `split_omissions`: images a `split create --dedupe` left out, with the copy kept in their place.
- `split_versions.leaks`: the leak audit of the split when it was stored.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("images", recreate="never") as batch:
        batch.add_column(sa.Column(
            "near_hash", sa.String(16), nullable=True,
            comment="64-bit sign-of-DCT hash of the blurred central picture (hex); flips and 90-degree "
                    "rotations are bit operations on it"))
        batch.add_column(sa.Column("file_format", sa.String(8), nullable=True,
                                   comment="image format read from the bytes (JPEG, PNG, GIF, ...)"))
    with op.batch_alter_table("split_versions") as batch:
        batch.add_column(sa.Column("leaks", sa.JSON, nullable=True,
                                   comment="leak audit when stored: count of crossings by kind ({} = none)"))
    op.create_table(
        "duplicate_groups",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("dataset_id", sa.Integer, nullable=False),
        sa.Column("kind", sa.String(8), nullable=False, comment="exact (same bytes) or near (same picture)"),
        sa.Column("method", sa.String(64), nullable=False, comment="the hash and matching that made the group"),
        sa.Column("threshold", sa.Float, nullable=False, comment="largest distance joined (bits; 0 for exact)"),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_duplicate_groups"),
        sa.ForeignKeyConstraint(["dataset_id"], ["datasets.id"], name="fk_duplicate_groups_dataset_id_datasets",
                                ondelete="CASCADE"),
        sa.CheckConstraint("kind IN ('exact', 'near')", name=op.f("ck_duplicate_groups_kind_known")),
    )
    op.create_index("ix_duplicate_groups_dataset_id", "duplicate_groups", ["dataset_id"])
    op.create_table(
        "duplicate_members",
        sa.Column("group_id", sa.Integer, nullable=False),
        sa.Column("image_id", sa.Integer, nullable=False),
        sa.Column("distance", sa.Float, nullable=True,
                  comment="distance to the group's first image (bits); NULL for exact groups"),
        sa.PrimaryKeyConstraint("group_id", "image_id", name="pk_duplicate_members"),
        sa.ForeignKeyConstraint(["group_id"], ["duplicate_groups.id"],
                                name="fk_duplicate_members_group_id_duplicate_groups", ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["image_id"], ["images.id"], name="fk_duplicate_members_image_id_images",
                                ondelete="CASCADE"),
    )
    op.create_index("ix_duplicate_members_image_id", "duplicate_members", ["image_id"])
    op.create_table(
        "ingest_exclusions",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("dataset_id", sa.Integer, nullable=False),
        sa.Column("path", sa.String(512), nullable=False, comment="relative to the dataset root, / separated"),
        sa.Column("reason", sa.String(255), nullable=False, comment="why the ingest left the file out"),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_ingest_exclusions"),
        sa.ForeignKeyConstraint(["dataset_id"], ["datasets.id"], name="fk_ingest_exclusions_dataset_id_datasets",
                                ondelete="CASCADE"),
        sa.UniqueConstraint("dataset_id", "path", name="uq_ingest_exclusions_dataset_id_path"),
    )
    op.create_table(
        "split_omissions",
        sa.Column("split_id", sa.Integer, nullable=False),
        sa.Column("image_id", sa.Integer, nullable=False),
        sa.Column("kept_image_id", sa.Integer, nullable=False, comment="the identical copy the split kept"),
        sa.PrimaryKeyConstraint("split_id", "image_id", name="pk_split_omissions"),
        sa.ForeignKeyConstraint(["split_id"], ["split_versions.id"],
                                name="fk_split_omissions_split_id_split_versions", ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["image_id"], ["images.id"], name="fk_split_omissions_image_id_images",
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["kept_image_id"], ["images.id"], name="fk_split_omissions_kept_image_id_images",
                                ondelete="CASCADE"),
    )


def downgrade() -> None:
    op.drop_table("split_omissions")
    op.drop_table("ingest_exclusions")
    op.drop_table("duplicate_members")
    op.drop_table("duplicate_groups")
    with op.batch_alter_table("split_versions") as batch:
        batch.drop_column("leaks")
    # "never": SQLite >= 3.35 drops a column in place; a table rebuild would break the per-bone views.
    with op.batch_alter_table("images", recreate="never") as batch:
        batch.drop_column("file_format")
        batch.drop_column("near_hash")
