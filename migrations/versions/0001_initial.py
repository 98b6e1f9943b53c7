"""Datasets, patients, studies and images, and one view per body part.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

BODY_PARTS = ("elbow", "finger", "forearm", "hand", "humerus", "shoulder", "wrist")

LABEL_COMMENT = (
    "MURA study label: 1 = abnormal, 0 = normal, read by radiologists per study. "
    "Abnormal includes fractures, hardware and other findings; the seed paper calls it is_fractured."
)


def upgrade() -> None:
    op.create_table(
        "datasets",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("root", sa.String(1024), nullable=False, comment="folder the image paths are relative to"),
        sa.Column("kind", sa.String(16), nullable=False, comment="mura or folder"),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_datasets"),
        sa.UniqueConstraint("name", name="uq_datasets_name"),
    )
    op.create_table(
        "patients",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("dataset_id", sa.Integer, nullable=False),
        sa.Column(
            "patient_key",
            sa.String(64),
            nullable=False,
            comment="the dataset's own patient id, e.g. 00001 for MURA's patient00001",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_patients"),
        sa.ForeignKeyConstraint(
            ["dataset_id"], ["datasets.id"], name="fk_patients_dataset_id_datasets", ondelete="CASCADE"
        ),
        sa.UniqueConstraint("dataset_id", "patient_key", name="uq_patients_dataset_id_patient_key"),
    )
    op.create_table(
        "studies",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("dataset_id", sa.Integer, nullable=False),
        sa.Column("patient_id", sa.Integer, nullable=False),
        sa.Column("body_part", sa.String(16), nullable=False),
        sa.Column(
            "source_split", sa.String(16), nullable=False, comment="the source's own split: train or valid for MURA"
        ),
        sa.Column("study_number", sa.Integer, nullable=False, comment="numbered per patient and body part"),
        sa.Column("label", sa.SmallInteger, nullable=False, comment=LABEL_COMMENT),
        sa.PrimaryKeyConstraint("id", name="pk_studies"),
        sa.ForeignKeyConstraint(
            ["dataset_id"], ["datasets.id"], name="fk_studies_dataset_id_datasets", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["patients.id"], name="fk_studies_patient_id_patients", ondelete="CASCADE"
        ),
        sa.UniqueConstraint(
            "dataset_id",
            "patient_id",
            "body_part",
            "study_number",
            name="uq_studies_dataset_id_patient_id_body_part_study_number",
        ),
        sa.CheckConstraint("label IN (0, 1)", name=op.f("ck_studies_label_binary")),
    )
    op.create_index("ix_studies_patient_id", "studies", ["patient_id"])
    op.create_index(
        "ix_studies_dataset_id_body_part_source_split_label",
        "studies",
        ["dataset_id", "body_part", "source_split", "label"],
    )
    op.create_table(
        "images",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("dataset_id", sa.Integer, nullable=False),
        sa.Column("study_id", sa.Integer, nullable=False),
        sa.Column("path", sa.String(512), nullable=False, comment="relative to the dataset root, / separated"),
        sa.Column("image_number", sa.Integer, nullable=False),
        sa.Column("file_size", sa.BigInteger, nullable=True, comment="bytes; set by ingest --verify"),
        sa.Column("width", sa.Integer, nullable=True),
        sa.Column("height", sa.Integer, nullable=True),
        sa.Column("content_hash", sa.String(64), nullable=True, comment="sha256 of the file's bytes"),
        sa.PrimaryKeyConstraint("id", name="pk_images"),
        sa.ForeignKeyConstraint(
            ["dataset_id"], ["datasets.id"], name="fk_images_dataset_id_datasets", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["study_id"], ["studies.id"], name="fk_images_study_id_studies", ondelete="CASCADE"
        ),
        sa.UniqueConstraint("dataset_id", "path", name="uq_images_dataset_id_path"),
        sa.UniqueConstraint("study_id", "image_number", name="uq_images_study_id_image_number"),
    )
    op.create_index("ix_images_content_hash", "images", ["content_hash"])

    # The seed paper kept one table per bone; these views give its users the same shape.
    for part in BODY_PARTS:
        op.execute(
            f"CREATE VIEW {part} AS "
            "SELECT i.path AS image_path, s.label AS is_fractured, "
            "s.study_number AS study, p.patient_key AS patient_id "
            "FROM images i JOIN studies s ON s.id = i.study_id "
            "JOIN patients p ON p.id = s.patient_id "
            f"WHERE s.body_part = '{part}'"
        )


def downgrade() -> None:
    for part in BODY_PARTS:
        op.execute(f"DROP VIEW {part}")
    # Indexes go with their tables (MySQL refuses to drop one a foreign key still needs).
    op.drop_table("images")
    op.drop_table("studies")
    op.drop_table("patients")
    op.drop_table("datasets")
