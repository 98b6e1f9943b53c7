"""The ORM schema. Alembic migrations in `migrations/` create it; this module only describes it.

MURA's label is per *study* and means normal (0) or abnormal (1). The seed paper called it
`is_fractured`; abnormal also covers hardware, degenerative disease and other findings.
"""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from boneclf.clock import utc_now

LABEL_COMMENT = (
    "MURA study label: 1 = abnormal, 0 = normal, read by radiologists per study. "
    "Abnormal includes fractures, hardware and other findings; the seed paper calls it is_fractured."
)

LABEL_VERSION_COMMENT = (
    "label version: id of the latest ingest_log row that added or relabeled studies of the dataset "
    "when the labels were read (NULL: before the log)"
)

# Stable constraint names so that migrations can refer to them on every backend.
NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}




class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    # Every model here maps one Table (none maps a join or a select), so `Model.__table__` is typed as the Table
    # it is rather than DeclarativeBase's general FromClause: insert(), update() and delete() take it as it is.
    __table__: ClassVar[Table]


class Dataset(Base):
    """One source of images (MURA v1.1, a relabeled MURA, a folder dataset), side by side."""

    __tablename__ = "datasets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    root: Mapped[str] = mapped_column(String(1024), comment="folder the image paths are relative to")
    kind: Mapped[str] = mapped_column(String(16), comment="mura or folder")
    synthetic: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("0"),
                                            comment="1: drawn by bonedb synth, not radiographs of people")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utc_now)

    patients: Mapped[list[Patient]] = relationship(back_populates="dataset")


class Patient(Base):
    __tablename__ = "patients"
    __table_args__ = (UniqueConstraint("dataset_id", "patient_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"))
    patient_key: Mapped[str] = mapped_column(
        String(64), comment="the dataset's own patient id, e.g. 00001 for MURA's patient00001"
    )

    dataset: Mapped[Dataset] = relationship(back_populates="patients")
    studies: Mapped[list[Study]] = relationship(back_populates="patient")


class Study(Base):
    """A study is identified by (dataset, patient, body part, study number), never the number alone."""

    __tablename__ = "studies"
    __table_args__ = (
        UniqueConstraint("dataset_id", "patient_id", "body_part", "study_number"),
        CheckConstraint("label IN (0, 1)", name="label_binary"),
        Index(None, "dataset_id", "body_part", "source_split", "label"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"))
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id", ondelete="CASCADE"), index=True)
    body_part: Mapped[str] = mapped_column(String(16))
    source_split: Mapped[str] = mapped_column(String(16), comment="the source's own split: train or valid for MURA")
    study_number: Mapped[int] = mapped_column(Integer, comment="numbered per patient and body part")
    # NULL: not labelled yet (a DICOM study without a row in its labels CSV); splits leave it out.
    label: Mapped[int | None] = mapped_column(SmallInteger, comment=LABEL_COMMENT)

    patient: Mapped[Patient] = relationship(back_populates="studies")
    images: Mapped[list[Image]] = relationship(back_populates="study")


class Image(Base):
    __tablename__ = "images"
    __table_args__ = (
        UniqueConstraint("dataset_id", "path"),
        UniqueConstraint("study_id", "image_number"),
        Index(None, "content_hash"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"))
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"))
    path: Mapped[str] = mapped_column(String(512), comment="relative to the dataset root, / separated")
    image_number: Mapped[int] = mapped_column(Integer)
    file_size: Mapped[int | None] = mapped_column(BigInteger, comment="bytes; set by ingest --verify")
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    content_hash: Mapped[str | None] = mapped_column(String(64), comment="sha256 of the file's bytes")
    perceptual_hash: Mapped[str | None] = mapped_column(
        String(64), comment="difference hash of the picture (hex), robust to resizing and re-encoding"
    )
    near_hash: Mapped[str | None] = mapped_column(
        String(16), comment="64-bit sign-of-DCT hash of the blurred central picture (hex); flips and 90-degree "
                            "rotations are bit operations on it"
    )
    file_format: Mapped[str | None] = mapped_column(
        String(8), comment="image format read from the bytes (JPEG, PNG, GIF, ...)"
    )
    rotation_signature: Mapped[bytes | None] = mapped_column(
        LargeBinary, comment="grey levels on a polar grid about the centre (8 x 144 bytes); a turn is a shift"
    )
    picture_signature: Mapped[bytes | None] = mapped_column(
        LargeBinary, comment="ORB keypoints of the picture and its mirror image: candidate pairs are found by them"
    )

    study: Mapped[Study] = relationship(back_populates="images")


class SplitVersion(Base):
    """An immutable assignment of a dataset's images to train, val and test."""

    __tablename__ = "split_versions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16), comment="bonedb (made by split create) or source (the dataset's own)")
    parameters: Mapped[dict] = mapped_column(JSON, comment="the options that made it")
    seed: Mapped[int | None] = mapped_column(Integer)
    content_hash: Mapped[str] = mapped_column(
        String(64), comment="sha256 over sorted (image path, subset, pinned label) lines"
    )
    images: Mapped[int] = mapped_column(Integer, comment="images assigned when it was made")
    label_version: Mapped[int | None] = mapped_column(
        Integer, comment=LABEL_VERSION_COMMENT
    )
    leaks: Mapped[dict | None] = mapped_column(
        JSON, comment="leak audit when stored: count of crossings by kind ({} = none)"
    )
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utc_now)


class SplitAssignment(Base):
    """An image's subset in a split, and its label when the split was made (training reads this one)."""

    __tablename__ = "split_assignments"
    __table_args__ = (
        Index(None, "split_id", "subset"),
        CheckConstraint("label IN (0, 1)", name="label_binary"),
    )

    split_id: Mapped[int] = mapped_column(ForeignKey("split_versions.id", ondelete="CASCADE"), primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), primary_key=True, index=True)
    subset: Mapped[str] = mapped_column(String(8), comment="train, val or test")
    label: Mapped[int] = mapped_column(SmallInteger, comment="the study label pinned when the split was made")


class TrainingRun(Base):
    """One training job: what was trained on what, how it went, and where its files are."""

    __tablename__ = "training_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    stage: Mapped[str] = mapped_column(String(16), comment="bodypart or fracture")
    parts: Mapped[list] = mapped_column(JSON, comment="the body parts the model covers")
    architecture: Mapped[str] = mapped_column(String(32))
    parameters: Mapped[dict] = mapped_column(JSON, comment="every training option")
    image_spec: Mapped[dict] = mapped_column(
        JSON, comment="how images become model inputs: size, pad, canny, channels, normalization"
    )
    # RESTRICT: a split that trained a model cannot be deleted from under it.
    split_id: Mapped[int] = mapped_column(ForeignKey("split_versions.id", ondelete="RESTRICT"), index=True)
    split_name: Mapped[str] = mapped_column(String(128))
    split_hash: Mapped[str] = mapped_column(String(64))
    label_version: Mapped[int | None] = mapped_column(
        Integer, comment=LABEL_VERSION_COMMENT
    )
    status: Mapped[str] = mapped_column(String(16), comment="running, finished, failed or interrupted")
    started_at: Mapped[datetime] = mapped_column(DateTime, default=utc_now)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)
    host: Mapped[str] = mapped_column(String(255))
    tf_version: Mapped[str] = mapped_column(String(32))
    metrics: Mapped[dict | None] = mapped_column(JSON, comment="the final validation metrics")
    artifact_dir: Mapped[str] = mapped_column(String(1024))
    error: Mapped[str | None] = mapped_column(Text)


class Evaluation(Base):
    __tablename__ = "evaluations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("training_runs.id", ondelete="CASCADE"), index=True)
    subset: Mapped[str] = mapped_column(String(8))
    metrics: Mapped[dict] = mapped_column(JSON, comment="image- and study-level metrics per part and overall")
    split_hash: Mapped[str | None] = mapped_column(String(64), comment="content hash of the split it scored")
    labels: Mapped[str | None] = mapped_column(
        String(8), comment="pinned (the split's labels) or current (the studies' labels when it ran)"
    )
    label_version: Mapped[int | None] = mapped_column(Integer, comment=LABEL_VERSION_COMMENT)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utc_now)


class IngestLog(Base):
    """One `ingest` or `ingest-folder` run that changed the database, or was refused or interrupted."""

    __tablename__ = "ingest_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    command: Mapped[str] = mapped_column(String(16), comment="ingest or ingest-folder")
    dataset: Mapped[str] = mapped_column(String(128), index=True)
    source_root: Mapped[str] = mapped_column(String(1024), comment="the folder it read")
    source_sha256: Mapped[dict] = mapped_column(
        JSON, comment="sha256 of each CSV read (folder datasets: of the sorted file listing)"
    )
    options: Mapped[dict] = mapped_column(JSON, comment="the options it ran with")
    started_at: Mapped[datetime] = mapped_column(DateTime)
    finished_at: Mapped[datetime] = mapped_column(DateTime)
    host: Mapped[str] = mapped_column(String(255))
    bonedb_version: Mapped[str] = mapped_column(String(32))
    outcome: Mapped[str] = mapped_column(String(16), comment="applied, refused, interrupted or failed")
    message: Mapped[str | None] = mapped_column(Text, comment="why it was refused, interrupted or failed")
    patients_added: Mapped[int] = mapped_column(Integer)
    studies_added: Mapped[int] = mapped_column(Integer)
    images_added: Mapped[int] = mapped_column(Integer)
    studies_relabeled: Mapped[int] = mapped_column(Integer)
    images_moved: Mapped[int] = mapped_column(Integer)
    images_measured: Mapped[int] = mapped_column(Integer)
    images_unchanged: Mapped[int] = mapped_column(Integer)
    rows_skipped: Mapped[int] = mapped_column(Integer, comment="bad rows or files left out")


class LabelChange(Base):
    """A study's label changed by an ingest (old and new label, why, from which file) or by a steward's review
    (`bonedb labels set`: reason "review", who, their note, the audit that flagged it), each with its log row."""

    __tablename__ = "label_history"
    __table_args__ = (
        CheckConstraint("old_label IN (0, 1)", name="old_label_binary"),
        CheckConstraint("new_label IN (0, 1)", name="new_label_binary"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    # RESTRICT: the log is the record of where a label came from; it is never deleted from under it.
    ingest_id: Mapped[int] = mapped_column(ForeignKey("ingest_log.id", ondelete="RESTRICT"), index=True)
    old_label: Mapped[int | None] = mapped_column(SmallInteger, comment="NULL: the study had no label yet")
    new_label: Mapped[int] = mapped_column(SmallInteger)
    reason: Mapped[str] = mapped_column(
        String(32), comment="folder rename, labels csv, labels-from csv or labels-from folder"
    )
    source: Mapped[str | None] = mapped_column(
        String(600), comment="the CSV file:line or study folder the new label came from"
    )
    reviewer: Mapped[str | None] = mapped_column(
        String(128), comment="who decided, for a review (NULL: an ingest's relabel)")
    note: Mapped[str | None] = mapped_column(Text, comment="why, in the reviewer's words")
    # No foreign key: history outlives the audit that flagged the study.
    audit_id: Mapped[int | None] = mapped_column(
        Integer, comment="the label audit that flagged the study, if one did")


class DuplicateGroup(Base):
    """Images of one dataset that are the same picture: exact (same bytes) or near (same picture after
    flips, rotations, small crops, rescaling or re-encoding). A split keeps a group in one subset."""

    __tablename__ = "duplicate_groups"
    __table_args__ = (CheckConstraint("kind IN ('exact', 'near')", name="kind_known"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(8), comment="exact (same bytes) or near (same picture)")
    method: Mapped[str] = mapped_column(String(64), comment="the hash and matching that made the group")
    threshold: Mapped[float] = mapped_column(Float, comment="score a verified pair reached to join (0 for exact)")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utc_now)


class DuplicateMember(Base):
    __tablename__ = "duplicate_members"

    group_id: Mapped[int] = mapped_column(ForeignKey("duplicate_groups.id", ondelete="CASCADE"), primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), primary_key=True, index=True)
    score: Mapped[float | None] = mapped_column(
        Float, comment="best verified correlation with another member; NULL in exact groups"
    )


class PicturePair(Base):
    """A candidate pair of contents examined on the pixels (`boneclf.data.same_picture`): the verdict and
    its evidence. Keyed by content (sha256), so a verdict outlives image ids and is never made twice."""

    __tablename__ = "picture_pairs"

    content_a: Mapped[str] = mapped_column(String(64), primary_key=True, comment="sha256 of one file (the smaller)")
    content_b: Mapped[str] = mapped_column(String(64), primary_key=True, comment="sha256 of the other")
    method: Mapped[str] = mapped_column(String(64), comment="the verifier and its version")
    same: Mapped[bool] = mapped_column(Boolean, comment="1: the same picture")
    score: Mapped[float] = mapped_column(Float, comment="median tile correlation once aligned, -1..1")
    inliers: Mapped[int] = mapped_column(Integer, comment="keypoints agreeing on the transform")
    overlap: Mapped[float] = mapped_column(Float, comment="share of a's picture that b covers once aligned")
    angle: Mapped[float] = mapped_column(Float, comment="degrees, b onto a")
    scale: Mapped[float] = mapped_column(Float, comment="b's pixels onto a's")
    flipped: Mapped[bool] = mapped_column(Boolean, comment="b mirrored first")
    dx: Mapped[float] = mapped_column(Float, comment="offset in a's pixels")
    dy: Mapped[float] = mapped_column(Float)
    examined_at: Mapped[datetime] = mapped_column(DateTime, default=utc_now)


class IngestExclusion(Base):
    """A file an ingest saw and left out on purpose (an unreadable format, say), and why."""

    __tablename__ = "ingest_exclusions"
    __table_args__ = (UniqueConstraint("dataset_id", "path"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"))
    path: Mapped[str] = mapped_column(String(512), comment="relative to the dataset root, / separated")
    reason: Mapped[str] = mapped_column(String(255), comment="why the ingest left the file out")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utc_now)


class SplitOmission(Base):
    """An image `split create --dedupe` left out because an identical copy represents it."""

    __tablename__ = "split_omissions"

    split_id: Mapped[int] = mapped_column(ForeignKey("split_versions.id", ondelete="CASCADE"), primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), primary_key=True)
    kept_image_id: Mapped[int] = mapped_column(
        ForeignKey("images.id", ondelete="CASCADE"), comment="the identical copy the split kept"
    )


class Review(Base):
    """A steward's decision about a study's label or a duplicate group. Never changes a label itself."""

    __tablename__ = "reviews"
    __table_args__ = (CheckConstraint("study_id IS NOT NULL OR group_id IS NOT NULL", name="subject"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int | None] = mapped_column(
        ForeignKey("studies.id", ondelete="CASCADE"), index=True, comment="the study reviewed (label decisions)")
    # No foreign key: duplicate groups are recomputed wholesale (new ids); `members` keeps what was judged.
    group_id: Mapped[int | None] = mapped_column(
        Integer, index=True, comment="the duplicate group reviewed (duplicate decisions), id when reviewed")
    members: Mapped[list | None] = mapped_column(
        JSON, comment="image ids of the duplicate group when it was reviewed")
    decision: Mapped[str] = mapped_column(
        String(32), comment="label confirmed, label disputed, duplicate confirmed or duplicate rejected")
    label: Mapped[int | None] = mapped_column(SmallInteger, comment="the study's label when it was reviewed")
    note: Mapped[str | None] = mapped_column(Text, comment="why (required when a label is disputed)")
    reviewer: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utc_now)


class DicomImage(Base):
    """What an image ingested from DICOM keeps of its file: keyed pseudonyms and allow-listed attributes only
    (boneclf.data.dicom_identity says which and why). Nothing here can be traced back without the key."""

    __tablename__ = "dicom_images"
    __table_args__ = (
        UniqueConstraint("dataset_id", "sop_pseudonym"),
        Index(None, "dataset_id", "study_pseudonym"),
    )

    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"))
    study_pseudonym: Mapped[str] = mapped_column(String(32), comment="keyed HMAC-SHA256 of StudyInstanceUID (hex)")
    sop_pseudonym: Mapped[str] = mapped_column(String(32), comment="keyed HMAC-SHA256 of SOPInstanceUID (hex)")
    part_source: Mapped[str | None] = mapped_column(
        String(32), comment="DICOM keyword the body part was read from (NULL: unknown part)")
    attributes: Mapped[dict] = mapped_column(
        JSON, comment="allow-listed DICOM attributes by keyword: PixelSpacing, ViewPosition, BitsStored, ...")


class ImageFlag(Base):
    """A warning attached to an image: "identity in pixels" (burned-in text) keeps it out of exports unless
    asked for, and `audit dataset` lists it."""

    __tablename__ = "image_flags"

    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), primary_key=True)
    flag: Mapped[str] = mapped_column(String(32), primary_key=True, comment="identity in pixels")
    reason: Mapped[str] = mapped_column(String(255), comment="what raised it, e.g. BurnedInAnnotation YES")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utc_now)


class LabelAudit(Base):
    """`bonedb labels suspects`: out-of-fold predictions of a dataset's studies, ranked with cleanlab."""

    __tablename__ = "label_audits"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"), index=True)
    parts: Mapped[list] = mapped_column(JSON, comment="the body parts audited")
    folds: Mapped[int] = mapped_column(Integer, comment="models trained; each scores the studies it never saw")
    parameters: Mapped[dict] = mapped_column(JSON, comment="the training options every fold's run shares")
    label_version: Mapped[int | None] = mapped_column(Integer, comment=LABEL_VERSION_COMMENT)
    method: Mapped[str] = mapped_column(String(64), comment="how studies were ranked (cleanlab and version)")
    status: Mapped[str] = mapped_column(String(16), comment="running or finished")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utc_now)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)


class LabelAuditFold(Base):
    __tablename__ = "label_audit_folds"

    audit_id: Mapped[int] = mapped_column(ForeignKey("label_audits.id", ondelete="CASCADE"), primary_key=True)
    fold: Mapped[int] = mapped_column(Integer, primary_key=True)
    split_id: Mapped[int | None] = mapped_column(
        ForeignKey("split_versions.id", ondelete="SET NULL"), comment="the fold's split: its test subset is the fold")
    run_id: Mapped[int | None] = mapped_column(
        ForeignKey("training_runs.id", ondelete="SET NULL"), comment="the run trained on it, once finished")


class LabelAuditStudy(Base):
    __tablename__ = "label_audit_studies"
    __table_args__ = (Index(None, "audit_id", "rank"),)

    audit_id: Mapped[int] = mapped_column(ForeignKey("label_audits.id", ondelete="CASCADE"), primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), primary_key=True)
    fold: Mapped[int] = mapped_column(Integer, comment="the fold whose model scored it")
    label: Mapped[int] = mapped_column(SmallInteger, comment="the study's label as scored (the fold's pinned)")
    probability: Mapped[float] = mapped_column(
        Float, comment="out-of-fold probability of abnormal: mean of its images' probabilities")
    score: Mapped[float] = mapped_column(Float, comment="cleanlab label-quality score, 0..1: low is suspicious")
    rank: Mapped[int] = mapped_column(Integer, comment="1 = the most suspicious study of the audit")
    flagged: Mapped[bool] = mapped_column(Boolean, comment="1: cleanlab's find_label_issues flags it")
