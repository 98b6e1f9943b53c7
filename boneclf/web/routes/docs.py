"""The API's documentation, /docs: Swagger UI from the installed `fastapi-offline` package (served
under /static/swagger/), started by a script of ours, so that it works offline and under the pages'
content security policy (FastAPI's own /docs loads Swagger UI from a CDN, with an inline script)."""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from ..context import render

router = APIRouter()
SWAGGER_ASSETS = resources.files("fastapi_offline") / "static"


@router.get("/docs", response_class=HTMLResponse, include_in_schema=False)
async def docs_page(request: Request) -> HTMLResponse:
    return render(request, "docs.html")
