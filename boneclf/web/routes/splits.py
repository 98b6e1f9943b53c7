"""Splits: the list, and a split's page: its counts per subset, the audit stored when it was made (the line
`bonedb split show` prints) and the audit now, its leaks as a table with thumbnails, a page at a time.

Split names may hold `/` (they are routed as paths). An audit reads every image row of the split, and
may hash files and verify candidate pairs: it runs in the server's audit lane, off the request loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Annotated
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse
from starlette.concurrency import run_in_threadpool

from boneclf.data.audit import SplitAudit, audit_split
from boneclf.data.browse import leak_page, unhashed_images
from boneclf.data.splits import SplitInfo, SplitSummary, list_splits, split_summary
from boneclf.results import plain

from ..context import ServerDep, render
from ..params import SplitQuery

router = APIRouter(tags=["splits"])


def splits_data(server: ServerDep) -> list[SplitInfo]:
    return list_splits(server.engine)


@dataclass
class SplitView:
    summary: SplitSummary
    audit: SplitAudit | None  # None while images lack hashes and hashing them was not asked for
    unhashed: int

    def to_dict(self) -> dict:
        return {"summary": self.summary.to_dict(), "audit": self.audit.to_dict() if self.audit else None,
                "unhashed": self.unhashed}

    def leaks(self) -> list[dict]:
        if self.audit is None:
            return []
        return self.audit.overlaps + self.audit.duplicate_groups + self.audit.exact_duplicates


async def split_query(query: Annotated[SplitQuery, Query()]) -> SplitQuery:
    return query


Chosen = Annotated[SplitQuery, Depends(split_query)]


async def split_data(server: ServerDep, name: str, query: Chosen) -> SplitView:
    """The split's summary, and its audit unless images lack hashes and hashing them was not asked for:
    hashing reads every such file (minutes on a full MURA) and stores the hashes, as `bonedb audit split`
    does."""
    summary, unhashed = await run_in_threadpool(
        lambda: (split_summary(server.engine, name), unhashed_images(server.engine, name)))
    if unhashed and not query.hash_missing:
        return SplitView(summary, None, unhashed)
    audit = await server.audits.run(("audit", name), partial(audit_split, server.engine, name))
    return SplitView(summary, audit, unhashed)


Splits = Annotated[list[SplitInfo], Depends(splits_data)]
Split = Annotated[SplitView, Depends(split_data)]


@router.get("/splits", response_class=HTMLResponse, include_in_schema=False)
async def splits_page(request: Request, splits: Splits) -> HTMLResponse:
    return render(request, "splits.html", splits=splits)


@router.get("/api/splits")
async def api_splits(splits: Splits) -> list[dict]:
    """Every split with its image count and how it was made."""
    return plain(splits)


@router.get("/splits/{name:path}", response_class=HTMLResponse, include_in_schema=False)
def split_page(request: Request, server: ServerDep, view: Split, query: Chosen, name: str) -> HTMLResponse:
    def page_link(page: int) -> str:
        return f"/splits/{quote(name)}?" + urlencode({"page": page}) + "#leaks"

    leaks = leak_page(server.engine, view.summary.dataset, view.leaks(), query.page)
    return render(request, "split.html", view=view, summary=view.summary, audit=view.audit, query=query,
                  leaks=leaks, page_link=page_link)


@router.get("/api/splits/{name:path}")
async def api_split(view: Split) -> dict:
    """A split's counts per subset x part x pinned label, and its leak audit (duplicate groups judged as
    `split create` judges them). Images never examined for copies (ingested without --verify) leave the
    audit null unless hash=true: they are then read and hashed and the groups computed, as `bonedb audit
    split` does."""
    return view.to_dict()
