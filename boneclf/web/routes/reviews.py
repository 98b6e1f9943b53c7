"""Review decisions, the server's only writes besides caches and split hashes: a study's label confirmed or
disputed, a duplicate group confirmed or rejected. Each has a form (from the study's or the group's page;
it redirects back) and a JSON twin; both go through one function per target.

A form with no decision chosen is refused: a page never preselects one, so a stray click records nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Form
from fastapi.responses import RedirectResponse
from pydantic import BaseModel

from boneclf.data.duplicates import Decision, decide_group
from boneclf.errors import BonedbError
from boneclf.store.reviews import DUPLICATE_DECISIONS, LABEL_DECISIONS, ReviewRecord, review_study

from ..context import ServerDep

router = APIRouter()


class ReviewIn(BaseModel):
    """A review decision as the API takes it; the reviewer defaults to the server's OS user."""

    decision: str
    note: str | None = None
    reviewer: str | None = None


class ReviewForm(BaseModel):
    """The same from a page's form: nothing chosen arrives as no decision."""

    decision: str = ""
    note: str = ""
    reviewer: str = ""


Recorder = Callable[..., ReviewRecord]


def _record(server: ServerDep, record: Recorder, target: int, review: ReviewIn | ReviewForm,
            choices: tuple[str, ...]) -> ReviewRecord:
    if not review.decision:
        raise BonedbError(f"no decision chosen: choose {' or '.join(choices)}")
    return record(server.engine, target, review.decision, note=review.note or None, reviewer=review.reviewer or None)


@router.post("/studies/{study_id}/reviews", include_in_schema=False)
def study_review_form(server: ServerDep, study_id: int, form: Annotated[ReviewForm, Form()]) -> RedirectResponse:
    _record(server, review_study, study_id, form, LABEL_DECISIONS)
    return RedirectResponse(f"/studies/{study_id}#reviews", status_code=303)


@router.post("/api/studies/{study_id}/reviews", tags=["studies"], status_code=201)
def api_study_review(server: ServerDep, study_id: int, review: ReviewIn) -> dict:
    """Record a decision on a study's label: `label confirmed`, or `label disputed` with a note.
    The label itself is not changed: `POST /api/studies/{id}/relabel` (or `bonedb labels set`) does that."""
    return _record(server, review_study, study_id, review, LABEL_DECISIONS).to_dict()


def _decide(server: ServerDep, group_id: int, review: ReviewIn | ReviewForm) -> Decision:
    if not review.decision:
        raise BonedbError(f"no decision chosen: choose {' or '.join(DUPLICATE_DECISIONS)}")
    return decide_group(server.engine, group_id, review.decision, note=review.note or None,
                        reviewer=review.reviewer or None)


@router.post("/duplicates/{group_id}/reviews", include_in_schema=False)
def group_review_form(server: ServerDep, group_id: int, form: Annotated[ReviewForm, Form()]) -> RedirectResponse:
    """The decision acts at once: the groups are rebuilt, so the page to go back to is the group the pictures
    are in now, or the dataset's list when a rejection left them in none."""
    decided = _decide(server, group_id, form)
    target = (f"/duplicates/{decided.group_now}#reviews" if decided.group_now is not None
              else f"/duplicates?dataset={quote(decided.dataset)}")
    return RedirectResponse(target, status_code=303)


@router.post("/api/duplicates/{group_id}/reviews", tags=["duplicates"], status_code=201)
def api_group_review(server: ServerDep, group_id: int, review: ReviewIn) -> dict:
    """Record `duplicate confirmed` or `duplicate rejected` on a near group, with its members as they are now,
    and rebuild the dataset's groups at once: `group_now` is where the pictures are after it."""
    decided = _decide(server, group_id, review)
    return {**decided.review.to_dict(), "group_now": decided.group_now, "groups": decided.groups}
