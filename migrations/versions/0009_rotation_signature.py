"""Rotation signature: near duplicates turned by a few degrees (files named `...-rotated1`).

- `images.rotation_signature`: the picture's grey levels on a polar grid about its centre
  (`boneclf.data.hashing.rotation_signature`, 8 rings x 144 angles, 1,152 bytes). Duplicate groups use
  it to match copies turned by up to 15 degrees from a quarter turn and to confirm near-hash
  matches. NULL for images measured before this revision: `bonedb duplicates compute` fills it in.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("images", recreate="never") as batch:
        batch.add_column(sa.Column(
            "rotation_signature", sa.LargeBinary, nullable=True,
            comment="grey levels on a polar grid about the centre (8 x 144 bytes); a turn is a shift"))


def downgrade() -> None:
    # "never": SQLite >= 3.35 drops a column in place; a table rebuild would break the per-bone views.
    with op.batch_alter_table("images", recreate="never") as batch:
        batch.drop_column("rotation_signature")
