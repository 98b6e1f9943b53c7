"""The study browser (filters, pages of studies with thumbnails) and a study's page: its images, label
history, reviews and ingests. Review decisions are posted to reviews.py."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse

from boneclf.data.browse import SUBSETS, StudyDetail, StudyPage, browse_studies, filter_choices, study_detail
from boneclf.store.provenance import label_history
from boneclf.store.reviews import LABEL_DECISIONS
from boneclf.store.runs import list_runs
from boneclf.vocabulary import BODYPART, SOURCE_SPLITS

from ..context import ServerDep, render
from ..params import StudyQuery

router = APIRouter(tags=["studies"])


async def study_query(query: Annotated[StudyQuery, Query()]) -> StudyQuery:
    return query


Chosen = Annotated[StudyQuery, Depends(study_query)]


def studies_data(server: ServerDep, query: Chosen) -> StudyPage:
    return browse_studies(server.engine, query.where(), query.page, query.per_page)


def study_data(server: ServerDep, study_id: int) -> StudyDetail:
    return study_detail(server.engine, study_id)


Studies = Annotated[StudyPage, Depends(studies_data)]
Study = Annotated[StudyDetail, Depends(study_data)]


@router.get("/studies", response_class=HTMLResponse, include_in_schema=False)
def studies_page(request: Request, server: ServerDep, found: Studies, query: Chosen) -> HTMLResponse:
    return render(request, "studies.html", found=found, chosen=query, choices=filter_choices(server.engine),
                  source_splits=SOURCE_SPLITS, subsets=SUBSETS)


@router.get("/api/studies")
async def api_studies(found: Studies) -> dict:
    """One page of studies, filtered, each with the ids of its images."""
    return found.to_dict()


@router.get("/studies/{study_id}", response_class=HTMLResponse, include_in_schema=False)
def study_page(request: Request, server: ServerDep, study: Study, audit: int | None = None) -> HTMLResponse:
    """AUDIT: the label audit the steward came from (its page links here), recorded with a relabel."""
    runs = [r for r in list_runs(server.engine, status="finished") if r.stage == BODYPART or study.part in r.parts]
    return render(request, "study.html", study=study, runs=runs, decisions=LABEL_DECISIONS,
                  reviewer=server.reviewer, audit=audit)


@router.get("/api/studies/{study_id}")
async def api_study(study: Study) -> dict:
    """A study: its images (with their subset in each split), label history, reviews and ingests."""
    return study.to_dict()


@router.get("/api/history")
def api_history(server: ServerDep, dataset: str | None = None, since: int | None = None) -> dict:
    """Label changes by ingests and review decisions (as `bonedb history`)."""
    return label_history(server.engine, dataset=dataset, since=since).to_dict()
