"""Provenance: an ingest log, label history, splits that pin their labels, runs that say which labels they used.

Existing splits get their images' current labels pinned, and their content hash is recomputed
over (path, subset, label), the definition from now on; runs and evaluations that recorded a
split's old hash get the new one (same split, same images, the hash re-expressed), so that a
run's split hash keeps matching its split. Evaluations made before this revision read the
studies' labels when they ran: they are marked `current`. Label versions start empty (NULL):
there was no log to point at. Downgrading recomputes the old (path, subset) hashes.

Revision ID: 0006
Revises: 0004
Create Date: 2026-11-27
"""

import hashlib
from collections import defaultdict

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0004"
branch_labels = None
depends_on = None

# Copied, not imported: a migration must not import the code it outlives.
LABEL_VERSION_COMMENT = (
    "label version: id of the latest ingest_log row that added or relabeled studies of the dataset "
    "when the labels were read (NULL: before the log)"
)
OLD_HASH_COMMENT = "sha256 over sorted (image path, subset) pairs"
NEW_HASH_COMMENT = "sha256 over sorted (image path, subset, pinned label) lines"


def upgrade() -> None:
    op.create_table(
        "ingest_log",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("command", sa.String(16), nullable=False, comment="ingest or ingest-folder"),
        sa.Column("dataset", sa.String(128), nullable=False),
        sa.Column("source_root", sa.String(1024), nullable=False, comment="the folder it read"),
        sa.Column("source_sha256", sa.JSON, nullable=False,
                  comment="sha256 of each CSV read (folder datasets: of the sorted file listing)"),
        sa.Column("options", sa.JSON, nullable=False, comment="the options it ran with"),
        sa.Column("started_at", sa.DateTime, nullable=False),
        sa.Column("finished_at", sa.DateTime, nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("bonedb_version", sa.String(32), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False, comment="applied, refused, interrupted or failed"),
        sa.Column("message", sa.Text, nullable=True, comment="why it was refused, interrupted or failed"),
        sa.Column("patients_added", sa.Integer, nullable=False),
        sa.Column("studies_added", sa.Integer, nullable=False),
        sa.Column("images_added", sa.Integer, nullable=False),
        sa.Column("studies_relabeled", sa.Integer, nullable=False),
        sa.Column("images_moved", sa.Integer, nullable=False),
        sa.Column("images_measured", sa.Integer, nullable=False),
        sa.Column("images_unchanged", sa.Integer, nullable=False),
        sa.Column("rows_skipped", sa.Integer, nullable=False, comment="bad rows or files left out"),
        sa.PrimaryKeyConstraint("id", name="pk_ingest_log"),
    )
    op.create_index("ix_ingest_log_dataset", "ingest_log", ["dataset"])
    op.create_table(
        "label_history",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("study_id", sa.Integer, nullable=False),
        sa.Column("ingest_id", sa.Integer, nullable=False),
        sa.Column("old_label", sa.SmallInteger, nullable=False),
        sa.Column("new_label", sa.SmallInteger, nullable=False),
        sa.Column("reason", sa.String(32), nullable=False,
                  comment="folder rename, labels csv, labels-from csv or labels-from folder"),
        sa.Column("source", sa.String(600), nullable=True,
                  comment="the CSV file:line or study folder the new label came from"),
        sa.PrimaryKeyConstraint("id", name="pk_label_history"),
        sa.ForeignKeyConstraint(["study_id"], ["studies.id"], name="fk_label_history_study_id_studies",
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["ingest_id"], ["ingest_log.id"], name="fk_label_history_ingest_id_ingest_log",
                                ondelete="RESTRICT"),
        sa.CheckConstraint("old_label IN (0, 1)", name=op.f("ck_label_history_old_label_binary")),
        sa.CheckConstraint("new_label IN (0, 1)", name=op.f("ck_label_history_new_label_binary")),
    )
    op.create_index("ix_label_history_study_id", "label_history", ["study_id"])
    op.create_index("ix_label_history_ingest_id", "label_history", ["ingest_id"])

    conn = op.get_bind()
    # Pin every split's labels: the labels its images' studies have now.
    with op.batch_alter_table("split_assignments") as batch:
        batch.add_column(sa.Column("label", sa.SmallInteger, nullable=True,
                                   comment="the study label pinned when the split was made"))
    conn.execute(sa.text(
        "UPDATE split_assignments SET label = (SELECT studies.label FROM images "
        "JOIN studies ON studies.id = images.study_id WHERE images.id = split_assignments.image_id)"))
    with op.batch_alter_table("split_assignments") as batch:
        batch.alter_column("label", existing_type=sa.SmallInteger, nullable=False,
                           existing_comment="the study label pinned when the split was made")
        batch.create_check_constraint(op.f("ck_split_assignments_label_binary"), "label IN (0, 1)")

    with op.batch_alter_table("split_versions") as batch:
        batch.add_column(sa.Column("images", sa.Integer, nullable=True, comment="images assigned when it was made"))
        batch.add_column(sa.Column("label_version", sa.Integer, nullable=True, comment=LABEL_VERSION_COMMENT))
    conn.execute(sa.text(
        "UPDATE split_versions SET images = (SELECT COUNT(*) FROM split_assignments "
        "WHERE split_assignments.split_id = split_versions.id)"))
    with op.batch_alter_table("split_versions") as batch:
        batch.alter_column("images", existing_type=sa.Integer, nullable=False,
                           existing_comment="images assigned when it was made")
        batch.alter_column("content_hash", existing_type=sa.String(64), existing_nullable=False,
                           comment=NEW_HASH_COMMENT, existing_comment=OLD_HASH_COMMENT)
    _rehash(conn, with_labels=True)

    with op.batch_alter_table("training_runs") as batch:
        batch.add_column(sa.Column("label_version", sa.Integer, nullable=True, comment=LABEL_VERSION_COMMENT))
    with op.batch_alter_table("evaluations") as batch:
        batch.add_column(sa.Column("split_hash", sa.String(64), nullable=True,
                                   comment="content hash of the split it scored"))
        batch.add_column(sa.Column("labels", sa.String(8), nullable=True,
                                   comment="pinned (the split's labels) or current (the studies' labels when it ran)"))
        batch.add_column(sa.Column("label_version", sa.Integer, nullable=True, comment=LABEL_VERSION_COMMENT))
    conn.execute(sa.text(
        "UPDATE evaluations SET labels = 'current', split_hash = (SELECT training_runs.split_hash "
        "FROM training_runs WHERE training_runs.id = evaluations.run_id)"))


def downgrade() -> None:
    conn = op.get_bind()
    _rehash(conn, with_labels=False)
    with op.batch_alter_table("evaluations") as batch:
        batch.drop_column("label_version")
        batch.drop_column("labels")
        batch.drop_column("split_hash")
    with op.batch_alter_table("training_runs") as batch:
        batch.drop_column("label_version")
    with op.batch_alter_table("split_versions") as batch:
        batch.alter_column("content_hash", existing_type=sa.String(64), existing_nullable=False,
                           comment=OLD_HASH_COMMENT, existing_comment=NEW_HASH_COMMENT)
        batch.drop_column("label_version")
        batch.drop_column("images")
    with op.batch_alter_table("split_assignments") as batch:
        batch.drop_constraint(op.f("ck_split_assignments_label_binary"), type_="check")
        batch.drop_column("label")
    op.drop_table("label_history")
    op.drop_table("ingest_log")


def _rehash(conn, *, with_labels: bool) -> None:
    """Every split's content hash in the new (path, subset, label) or the old (path, subset) form, and the
    runs that recorded the split's previous hash moved along with it."""
    rows = conn.execute(sa.text(
        "SELECT split_assignments.split_id, images.path, split_assignments.subset, split_assignments.label "
        "FROM split_assignments JOIN images ON images.id = split_assignments.image_id")).all()
    lines = defaultdict(list)
    for split_id, path, subset, label in rows:
        lines[split_id].append((path, f"{path}\t{subset}\t{label}\n" if with_labels else f"{path}\t{subset}\n"))
    for split_id, items in lines.items():
        digest = hashlib.sha256()
        for _path, line in sorted(items):
            digest.update(line.encode())
        new = digest.hexdigest()
        old = conn.execute(sa.text("SELECT content_hash FROM split_versions WHERE id = :id"), {"id": split_id}).scalar()
        conn.execute(sa.text("UPDATE split_versions SET content_hash = :new WHERE id = :id"),
                     {"new": new, "id": split_id})
        conn.execute(sa.text("UPDATE training_runs SET split_hash = :new WHERE split_id = :id AND split_hash = :old"),
                     {"new": new, "id": split_id, "old": old})
