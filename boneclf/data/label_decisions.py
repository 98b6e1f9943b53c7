"""`bonedb labels set`: a steward changes a study's label, with the provenance an ingest's relabel has.

One transaction writes a row in the ingest log (command "labels set": the dataset's label version moves to
it, as after an ingest relabel), a label_history row (reason "review", who, why, the audit that flagged the
study) and the study's new label. Splits keep the labels they pinned; `split create NEW --from OLD`
re-bases them. A decision is undone only by another decision, and history keeps both.

A later ingest whose files disagree with a decision leaves the decided label and reports the conflict
(boneclf.data.ingest, by `reviewed_labels`): the files predate the steward's look at the pictures.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine, insert, update

from boneclf.errors import BonedbError
from boneclf.results import Result
from boneclf.store.label_audits import audit_exists
from boneclf.store.locks import exclusive
from boneclf.store.provenance import REVIEW, IngestCounts, IngestRecord, find_study, log_applied
from boneclf.store.queries import dataset_id_of
from boneclf.store.reviews import MAX_NOTE, default_reviewer
from boneclf.store.schema import LabelChange, Study
from boneclf.vocabulary import label_word

_history = LabelChange.__table__


@dataclass
class LabelDecision(Result):
    dataset: str
    study: str  # as ingest names studies: patient00001 shoulder study1 (train)
    old_label: int | None
    new_label: int
    reviewer: str
    note: str
    audit_id: int | None
    log_id: int  # its row in the ingest log: the dataset's label version from now on

    def describe(self) -> str:
        old = "none" if self.old_label is None else f"{self.old_label} ({label_word(self.old_label)})"
        return (f"{self.study} of dataset {self.dataset!r}: label {old} -> {self.new_label} "
                f"({label_word(self.new_label)}) by review of {self.reviewer}, logged as {self.log_id}")


def set_label(engine: Engine, dataset: str, patient: str, part: str, number: int, label: int, *, note: str,
              reviewer: str | None = None, audit_id: int | None = None) -> LabelDecision:
    """Change one study's label by a steward's decision (see the module's docstring)."""
    if label not in (0, 1):
        raise BonedbError(f"label {label}: 1 (abnormal) or 0 (normal)")
    note = (note or "").strip()
    if not note:
        raise BonedbError("--reason: say why the label changes (what the pictures show); history keeps it")
    if len(note) > MAX_NOTE:
        raise BonedbError(f"--reason: at most {MAX_NOTE} characters")
    reviewer = (reviewer or "").strip() or default_reviewer()
    if len(reviewer) > 128:
        raise BonedbError("--reviewer: at most 128 characters")
    # The ingest lock: a decision and an ingest never interleave, so each reads the other's result.
    with exclusive(engine, "ingest"), engine.begin() as conn:
        dataset_id = dataset_id_of(conn, dataset)
        study_id, old, described = find_study(conn, dataset_id, dataset, patient, part, number)
        if audit_id is not None and not audit_exists(conn, audit_id):
            raise BonedbError(f"--audit {audit_id}: no such label audit (`bonedb labels audits` lists them)")
        if old == label:
            raise BonedbError(f"{described} of dataset {dataset!r} is already labelled {label} ({label_word(label)}):"
                              " nothing to change")
        options = {"study": described, "label": label, "audit": audit_id, "reviewer": reviewer}
        record = IngestRecord("labels set", dataset, f"review by {reviewer}", options,
                              counts=IngestCounts(studies_relabeled=1))
        log_id = log_applied(conn, record)
        conn.execute(insert(_history).values(ingest_id=log_id, study_id=study_id, old_label=old, new_label=label,
                                             reason=REVIEW, source=None, reviewer=reviewer, note=note,
                                             audit_id=audit_id))
        conn.execute(update(Study.__table__).where(Study.__table__.c.id == study_id).values(label=label))
    return LabelDecision(dataset, described, old, label, reviewer, note, audit_id, log_id)
