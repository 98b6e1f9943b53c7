"""Same picture: one judgement of duplicates, verified on the pixels (boneclf.data.same_picture).

- `images.picture_signature`: a few dozen ORB keypoints of the picture and of its mirror image
  (positions and descriptors, about 3.5 KB), from which candidate pairs are found. NULL for images
  measured before this revision: `bonedb duplicates compute` fills it in.
- `picture_pairs`: every candidate pair of contents (sha256) examined on the pixels, with its verdict
  and the evidence (transform, inliers, overlap, correlation). Keyed by content, not image id, so a
  verdict survives re-ingest and is not made twice.
- `duplicate_members.distance` becomes `score`: a near group's member's best verified correlation
  with another member (one unit everywhere; the group's `threshold` is the score a pair must reach).
  Groups stored before this revision were made by the old hashes: `duplicates compute` replaces them.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("images", recreate="never") as batch:
        batch.add_column(sa.Column(
            "picture_signature", sa.LargeBinary, nullable=True,
            comment="ORB keypoints of the picture and its mirror image: candidate pairs are found by them"))
    op.create_table(
        "picture_pairs",
        sa.Column("content_a", sa.String(64), primary_key=True, comment="sha256 of one file (the smaller)"),
        sa.Column("content_b", sa.String(64), primary_key=True, comment="sha256 of the other"),
        sa.Column("method", sa.String(64), nullable=False, comment="the verifier and its version"),
        sa.Column("same", sa.Boolean, nullable=False, comment="1: the same picture"),
        sa.Column("score", sa.Float, nullable=False, comment="median tile correlation once aligned, -1..1"),
        sa.Column("inliers", sa.Integer, nullable=False, comment="keypoints agreeing on the transform"),
        sa.Column("overlap", sa.Float, nullable=False, comment="share of a's picture that b covers once aligned"),
        sa.Column("angle", sa.Float, nullable=False, comment="degrees, b onto a"),
        sa.Column("scale", sa.Float, nullable=False, comment="b's pixels onto a's"),
        sa.Column("flipped", sa.Boolean, nullable=False, comment="b mirrored first"),
        sa.Column("dx", sa.Float, nullable=False, comment="offset in a's pixels"),
        sa.Column("dy", sa.Float, nullable=False),
        sa.Column("examined_at", sa.DateTime, nullable=False),
    )
    with op.batch_alter_table("duplicate_members") as batch:
        batch.alter_column("distance", new_column_name="score", existing_type=sa.Float, existing_nullable=True,
                           comment="best verified correlation with another member; NULL in exact groups")
    if op.get_bind().dialect.name != "sqlite":  # SQLite keeps no column comments
        op.alter_column("duplicate_groups", "threshold", existing_type=sa.Float, existing_nullable=False,
                        comment="score a verified pair reached to join (0 for exact)")


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        op.alter_column("duplicate_groups", "threshold", existing_type=sa.Float, existing_nullable=False,
                        comment="largest distance joined (bits; 0 for exact)")
    with op.batch_alter_table("duplicate_members") as batch:
        batch.alter_column("score", new_column_name="distance", existing_type=sa.Float, existing_nullable=True,
                           comment="distance to the group's first image (bits); NULL for exact groups")
    op.drop_table("picture_pairs")
    with op.batch_alter_table("images", recreate="never") as batch:
        batch.drop_column("picture_signature")
