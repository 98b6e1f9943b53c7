"""The label loop in the browser: the label audits (`bonedb labels suspects`), an audit's studies ranked most
suspicious first with a thumbnail each, and a relabel from a study's page, the twin of `bonedb labels set`:
logged, kept in history with reason `review`, and reversible by another decision."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import BaseModel

from boneclf.data.browse import first_images, study_detail
from boneclf.data.label_decisions import LabelDecision, set_label
from boneclf.errors import BonedbError
from boneclf.ml.label_ranking import caution
from boneclf.results import plain
from boneclf.store.label_audits import AuditRecord, SuspectRow, get_audit, list_audits, suspects

from ..context import ServerDep, render
from ..params import AuditFilter

router = APIRouter(tags=["labels"])


def audits_data(server: ServerDep) -> list[AuditRecord]:
    return list_audits(server.engine)


@dataclass
class AuditView:
    audit: AuditRecord
    suspects: list[SuspectRow]
    thumbnails: dict[int, int]  # study id -> its first image's id
    chosen: AuditFilter
    caution: str | None  # the fold models learned too little for the ranking to mean much

    def fold_run(self, row: SuspectRow) -> int | None:
        """The run of the fold model that scored ROW (its Grad-CAM is on that run's study page)."""
        return self.audit.runs[row.fold] if 0 <= row.fold < len(self.audit.runs) else None

    def to_dict(self) -> dict:
        return {"audit": self.audit.to_dict(), "caution": self.caution, "suspects": [plain(s) for s in self.suspects]}


async def audit_filter(chosen: Annotated[AuditFilter, Query()]) -> AuditFilter:
    return chosen


def audit_data(server: ServerDep, audit_id: int, chosen: Annotated[AuditFilter, Depends(audit_filter)]) -> AuditView:
    audit = get_audit(server.engine, audit_id)
    scored = suspects(server.engine, audit_id)
    rows = [row for row in scored if chosen.keeps(row)][:chosen.top]
    return AuditView(audit, rows, first_images(server.engine, [r.study_id for r in rows]), chosen,
                     caution([r.label for r in scored], [r.probability for r in scored]))


Audits = Annotated[list[AuditRecord], Depends(audits_data)]
Audit = Annotated[AuditView, Depends(audit_data)]


@router.get("/labels", response_class=HTMLResponse, include_in_schema=False)
def audits_page(request: Request, audits: Audits) -> HTMLResponse:
    return render(request, "labels.html", audits=audits)


@router.get("/api/labels")
async def api_audits(audits: Audits) -> list[dict]:
    """Every label audit: its dataset, folds, status and the number of studies it scored."""
    return [a.to_dict() for a in audits]


@router.get("/labels/{audit_id}", response_class=HTMLResponse, include_in_schema=False)
def audit_page(request: Request, view: Audit) -> HTMLResponse:
    return render(request, "label_audit.html", view=view)


@router.get("/api/labels/{audit_id}")
async def api_audit(view: Audit) -> dict:
    """One audit and its studies, most suspicious first (`top` of them)."""
    return view.to_dict()


class RelabelIn(BaseModel):
    """A relabel as the API takes it: the new label (0 normal, 1 abnormal), why, and optionally the audit that
    flagged the study; the reviewer defaults to the server's OS user."""

    label: int
    note: str
    reviewer: str | None = None
    audit: int | None = None


class RelabelForm(BaseModel):
    """The same from the study page's form: nothing chosen arrives empty, and is refused."""

    label: str = ""
    note: str = ""
    reviewer: str = ""
    audit: str = ""


def _relabel(server: ServerDep, study_id: int, label: int, note: str, reviewer: str | None,
             audit: int | None) -> LabelDecision:
    study = study_detail(server.engine, study_id)
    return set_label(server.engine, study.dataset, study.patient, study.part, study.number, label, note=note,
                     reviewer=reviewer or server.reviewer, audit_id=audit)


@router.post("/studies/{study_id}/relabel", include_in_schema=False)
def relabel_form(server: ServerDep, study_id: int, form: Annotated[RelabelForm, Form()]) -> RedirectResponse:
    if form.label not in ("0", "1"):
        raise BonedbError("no label chosen: choose 0 (normal) or 1 (abnormal)")
    if form.audit and not form.audit.isdigit():
        raise BonedbError(f"audit {form.audit!r}: a label audit's number")
    _relabel(server, study_id, int(form.label), form.note, form.reviewer or None,
             int(form.audit) if form.audit else None)
    return RedirectResponse(f"/studies/{study_id}#history", status_code=303)


@router.post("/api/studies/{study_id}/relabel", tags=["studies"], status_code=201)
def api_relabel(server: ServerDep, study_id: int, relabel: RelabelIn) -> dict:
    """Change a study's label by a steward's decision (as `bonedb labels set`): logged as an ingest of its own,
    kept in history with reason `review`; splits made before keep the label they pinned."""
    return _relabel(server, study_id, relabel.label, relabel.note, relabel.reviewer, relabel.audit).to_dict()
