"""DICOM: pseudonymised image records, image flags, and studies that have no label yet.

- `dicom_images`: per image ingested from DICOM, the keyed pseudonyms of its StudyInstanceUID and
  SOPInstanceUID (re-ingests find it again), the keyword its body part came from, and the
  allow-listed attributes (pixel spacing, view position, laterality, bits stored, original
  photometric interpretation) by DICOM keyword.
- `image_flags`: warnings on an image; "identity in pixels" keeps it out of exports unless asked.
- `studies.label` may be NULL: a DICOM study nobody labelled yet. Splits leave such studies out.
  `label_history.old_label` may be NULL too: the first label given to such a study.

Downgrading refuses while a study has no label (label it, or delete its dataset, first); history rows
that gave a study its first label are dropped (the old schema has no way to say "no label").

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

# One line each, so that the lead can renumber at merge.
revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

# Copied, not imported: a migration must not import the code it outlives.
BODY_PARTS = ("elbow", "finger", "forearm", "hand", "humerus", "shoulder", "wrist")
LABEL_COMMENT = (
    "MURA study label: 1 = abnormal, 0 = normal, read by radiologists per study. "
    "Abnormal includes fractures, hardware and other findings; the seed paper calls it is_fractured."
)
OLD_LABEL_COMMENT = "NULL: the study had no label yet"


def upgrade() -> None:
    op.create_table(
        "dicom_images",
        sa.Column("image_id", sa.Integer, nullable=False),
        sa.Column("dataset_id", sa.Integer, nullable=False),
        sa.Column("study_pseudonym", sa.String(32), nullable=False,
                  comment="keyed HMAC-SHA256 of StudyInstanceUID (hex)"),
        sa.Column("sop_pseudonym", sa.String(32), nullable=False, comment="keyed HMAC-SHA256 of SOPInstanceUID (hex)"),
        sa.Column("part_source", sa.String(32), nullable=True,
                  comment="DICOM keyword the body part was read from (NULL: unknown part)"),
        sa.Column("attributes", sa.JSON, nullable=False,
                  comment="allow-listed DICOM attributes by keyword: PixelSpacing, ViewPosition, BitsStored, ..."),
        sa.PrimaryKeyConstraint("image_id", name="pk_dicom_images"),
        sa.ForeignKeyConstraint(["image_id"], ["images.id"], name="fk_dicom_images_image_id_images",
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["dataset_id"], ["datasets.id"], name="fk_dicom_images_dataset_id_datasets",
                                ondelete="CASCADE"),
        sa.UniqueConstraint("dataset_id", "sop_pseudonym", name="uq_dicom_images_dataset_id_sop_pseudonym"),
    )
    op.create_index("ix_dicom_images_dataset_id_study_pseudonym", "dicom_images", ["dataset_id", "study_pseudonym"])
    op.create_table(
        "image_flags",
        sa.Column("image_id", sa.Integer, nullable=False),
        sa.Column("flag", sa.String(32), nullable=False, comment="identity in pixels"),
        sa.Column("reason", sa.String(255), nullable=False, comment="what raised it, e.g. BurnedInAnnotation YES"),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.PrimaryKeyConstraint("image_id", "flag", name="pk_image_flags"),
        sa.ForeignKeyConstraint(["image_id"], ["images.id"], name="fk_image_flags_image_id_images",
                                ondelete="CASCADE"),
    )
    _label_nullable(True)


def downgrade() -> None:
    conn = op.get_bind()
    unlabelled = conn.execute(sa.text("SELECT COUNT(*) FROM studies WHERE label IS NULL")).scalar()
    if unlabelled:
        raise RuntimeError(f"{unlabelled} studies have no label, which revision 0009 cannot hold: label them "
                           "(ingest-dicom --labels) or delete their dataset before downgrading")
    conn.execute(sa.text("DELETE FROM label_history WHERE old_label IS NULL"))
    _label_nullable(False)
    op.drop_table("image_flags")
    op.drop_index("ix_dicom_images_dataset_id_study_pseudonym", table_name="dicom_images")
    op.drop_table("dicom_images")


def _label_nullable(nullable: bool) -> None:
    # SQLite rebuilds `studies` to change a column, and a rebuild under the per-bone views breaks them:
    # they are dropped first and made again, as revision 0001 made them.
    sqlite = op.get_bind().dialect.name == "sqlite"
    if sqlite:
        for part in BODY_PARTS:
            op.execute(f"DROP VIEW {part}")
    with op.batch_alter_table("studies") as batch:
        batch.alter_column("label", existing_type=sa.SmallInteger, nullable=nullable, existing_comment=LABEL_COMMENT)
    with op.batch_alter_table("label_history") as batch:
        batch.alter_column("old_label", existing_type=sa.SmallInteger, nullable=nullable,
                           comment=OLD_LABEL_COMMENT if nullable else None,
                           existing_comment=None if nullable else OLD_LABEL_COMMENT)
    if sqlite:
        for part in BODY_PARTS:
            op.execute(
                f"CREATE VIEW {part} AS "
                "SELECT i.path AS image_path, s.label AS is_fractured, "
                "s.study_number AS study, p.patient_key AS patient_id "
                "FROM images i JOIN studies s ON s.id = i.study_id "
                "JOIN patients p ON p.id = s.patient_id "
                f"WHERE s.body_part = '{part}'"
            )
