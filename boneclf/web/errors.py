"""Errors as answers: each kind of error has its own HTTP status, and one handler per kind answers a
browser opening a page with a page and everything else (the API, pictures, programs) with JSON.

Routes never translate errors by hand: the library raises NotFound for a missing row (404) and
BonedbError for anything else the user can fix (400). Nothing a handler sends holds the database
URL or a traceback.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException

from boneclf.errors import BonedbError, NotFound
from boneclf.store.engine import scrub

from .context import render
from .lanes import Busy

_log = logging.getLogger("bonedb.serve")


class CannotShow(BonedbError):
    """The thing exists but cannot be shown (a picture the model or Pillow cannot decode): 422."""


STATUS = ((NotFound, 404), (CannotShow, 422), (BonedbError, 400))
TITLES = {400: "Cannot do that", 404: "Not found", 405: "Not allowed", 422: "Cannot show that",
          500: "Server error", 503: "Busy"}


def wants_json(request: Request) -> bool:
    """The API, pictures and programs get JSON; a browser opening a page gets a page."""
    return request.url.path.startswith("/api/") or "text/html" not in request.headers.get("accept", "")


def answer(request: Request, status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    if wants_json(request):
        return JSONResponse({"detail": message}, status_code=status, headers=headers)
    response = render(request, "error.html", status, title=TITLES.get(status, "Error"), message=message)
    response.headers.update(headers or {})
    return response


def install_error_handlers(app: FastAPI, database_url: str) -> None:
    @app.exception_handler(BonedbError)
    async def known(request: Request, exc: BonedbError) -> Response:
        status = next(code for kind, code in STATUS if isinstance(exc, kind))
        return answer(request, status, str(exc))

    @app.exception_handler(RequestValidationError)
    async def malformed(request: Request, exc: RequestValidationError) -> Response:
        problems = [f"{'.'.join(str(p) for p in e['loc'][1:]) or e['loc'][0]}: {e['msg']}" for e in exc.errors()]
        if wants_json(request) and request.url.path.startswith("/api/"):  # FastAPI's documented shape
            return JSONResponse({"detail": [{"loc": e["loc"], "msg": e["msg"], "type": e["type"]}
                                            for e in exc.errors()]}, status_code=422)
        return answer(request, 422, "; ".join(problems))

    @app.exception_handler(HTTPException)
    async def routing(request: Request, exc: HTTPException) -> Response:
        message = "no such page" if exc.status_code == 404 else str(exc.detail)
        return answer(request, exc.status_code, message, dict(exc.headers or {}))

    @app.exception_handler(Busy)
    async def busy(request: Request, exc: Busy) -> Response:
        return answer(request, 503, str(exc), {"Retry-After": str(exc.retry_after)})

    @app.exception_handler(SQLAlchemyError)
    async def database_error(request: Request, exc: SQLAlchemyError) -> Response:
        # The driver's message can hold the URL: the response says only what kind of failure it was;
        # the server's log gets the first line, password masked.
        detail = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        _log.error("%s %s: database error: %s", request.method, request.url.path, scrub(detail, database_url))
        return answer(request, 500, f"database error ({type(exc).__name__}); see the server's log")
