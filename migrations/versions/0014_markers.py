"""Markers: the burned-in marks (side markers, text, label plates) found on each image.

- `marker_boxes`: one row per box, in the picture's own pixels (boneclf.data.markers). Masking
  (`--mask-markers`) and the marker mass of Grad-CAM read them.
- `images.markers_method`: the detector (and its version) that examined the image; NULL: not examined
  yet (`bonedb markers compute` examines them). An image examined and found clean has no boxes and a
  method, which is how "no markers" differs from "not looked at".

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("images", recreate="never") as batch:
        batch.add_column(sa.Column(
            "markers_method", sa.String(64), nullable=True,
            comment="the marker detector that examined the image (NULL: not examined)"))
    op.create_table(
        "marker_boxes",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("image_id", sa.Integer, nullable=False),
        sa.Column("x", sa.Integer, nullable=False, comment="left edge, pixels of the picture"),
        sa.Column("y", sa.Integer, nullable=False, comment="top edge"),
        sa.Column("width", sa.Integer, nullable=False),
        sa.Column("height", sa.Integer, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False, comment="text (bright marks) or plate (dark text on a "
                                                                   "bright rectangle)"),
        sa.PrimaryKeyConstraint("id", name="pk_marker_boxes"),
        sa.ForeignKeyConstraint(["image_id"], ["images.id"], name="fk_marker_boxes_image_id_images",
                                ondelete="CASCADE"),
    )
    op.create_index("ix_marker_boxes_image_id", "marker_boxes", ["image_id"])


def downgrade() -> None:
    op.drop_table("marker_boxes")  # with its index (MySQL refuses to drop an index its foreign key needs)
    with op.batch_alter_table("images", recreate="never") as batch:
        batch.drop_column("markers_method")
