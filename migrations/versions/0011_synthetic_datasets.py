"""Synthetic datasets: `datasets.synthetic` says a dataset was drawn by `bonedb synth` (or `bonedb demo`).

Reports call such data synthetic and leave out what only real radiographs can claim (MURA's
baselines, radiologists' labels). `bonedb synth` leaves a marker file beside its CSVs
(`bonedb-synth.json`); `bonedb ingest` sets the flag from it. Rows made before this revision are
0 until their next ingest (a re-ingest of synthetic data with the marker sets it).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("datasets", recreate="never") as batch:
        batch.add_column(sa.Column(
            "synthetic", sa.Boolean, nullable=False, server_default=sa.text("0"),
            comment="1: drawn by bonedb synth, not radiographs of people"))


def downgrade() -> None:
    # "never": SQLite >= 3.35 drops a column in place; a table rebuild would break the per-bone views.
    with op.batch_alter_table("datasets", recreate="never") as batch:
        batch.drop_column("synthetic")
