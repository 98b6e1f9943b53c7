"""Duplicate groups: a page of them, largest first, with thumbnails; one group's members side by side
with their review form (decisions are posted to reviews.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import HTMLResponse

from boneclf.data.browse import GroupPage, duplicate_groups_page, studies_of_images
from boneclf.results import plain
from boneclf.store.duplicates import DuplicateGroupInfo, get_duplicate_group
from boneclf.store.reviews import DUPLICATE_DECISIONS, ReviewRecord, reviews_of

from ..context import ServerDep, render

router = APIRouter(tags=["duplicates"])
GROUPS_PER_PAGE = 50


def groups_data(server: ServerDep, dataset: str | None = None, page: int = 1) -> GroupPage:
    return duplicate_groups_page(server.engine, dataset or None, page, GROUPS_PER_PAGE)


@dataclass
class GroupView:
    group: DuplicateGroupInfo
    reviews: list[ReviewRecord]
    study_ids: dict[int, int]  # member image id -> its study's id

    def to_dict(self) -> dict:
        return {**self.group.to_dict(), "reviews": plain(self.reviews), "study_ids": plain(self.study_ids)}


def group_data(server: ServerDep, group_id: int) -> GroupView:
    with server.engine.connect() as conn:
        group = get_duplicate_group(conn, group_id)
    return GroupView(group, reviews_of(server.engine, group_id=group_id),
                     studies_of_images(server.engine, [m.image_id for m in group.members]))


Groups = Annotated[GroupPage, Depends(groups_data)]
Group = Annotated[GroupView, Depends(group_data)]


@router.get("/duplicates", response_class=HTMLResponse, include_in_schema=False)
async def groups_page(request: Request, found: Groups, dataset: str = "") -> HTMLResponse:
    def page_link(page: int) -> str:
        return "/duplicates?" + urlencode({"dataset": dataset, "page": page} if dataset else {"page": page})

    return render(request, "duplicates.html", found=found, dataset=dataset, page_link=page_link)


@router.get("/api/duplicates")
async def api_groups(response: Response, found: Groups) -> list[dict]:
    """A page of duplicate groups (50), largest first, with their size, source splits and members' image ids
    (`/api/duplicates/{id}` has each member's identity). The headers say how many groups and pages there are."""
    response.headers["X-Total-Count"] = str(found.total)
    response.headers["X-Pages"] = str(found.pages)
    return plain(found.groups)


@router.get("/duplicates/{group_id}", response_class=HTMLResponse, include_in_schema=False)
async def group_page(request: Request, server: ServerDep, view: Group) -> HTMLResponse:
    return render(request, "duplicate.html", view=view, group=view.group, decisions=DUPLICATE_DECISIONS,
                  reviewer=server.reviewer)


@router.get("/api/duplicates/{group_id}")
async def api_group(view: Group) -> dict:
    """One duplicate group with every member's identity, label and source split, its reviews, and each
    member's study id."""
    return view.to_dict()
