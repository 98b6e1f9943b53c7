"""What every router shares: the server's state (one `Server` per app) and rendering a page.

A route asks for the state with `ServerDep` and renders with `render`; nothing else is global.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import jinja2
from fastapi import Depends, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from sqlalchemy import Engine

from boneclf.results import fmt
from boneclf.vocabulary import BODYPART, LABEL_WORDS

if TYPE_CHECKING:
    from .gradcam_cache import GradCamCache
    from .lanes import Lane

PACKAGE = resources.files("boneclf.web")


@dataclass
class Server:
    engine: Engine
    database_url: str  # for masking it out of logged errors; never sent in a response
    cache_dir: Path  # thumbnails, Grad-CAM overlays and reports
    reviewer: str  # who a review is by when the form leaves it empty: the server's OS user
    templates: Jinja2Templates
    models: Lane  # TensorFlow work (reports, Grad-CAM): one model at a time on this 2-core server
    audits: Lane  # split audits that hash files or compare every pair
    gradcams: GradCamCache


def templates() -> Jinja2Templates:
    environment = jinja2.Environment(loader=jinja2.FileSystemLoader(str(PACKAGE / "templates")), autoescape=True,
                                     undefined=jinja2.StrictUndefined)  # a misspelt field fails, not blanks
    environment.globals.update(LABEL_WORDS=LABEL_WORDS, BODYPART=BODYPART, fmt=fmt, label_words=label_words)
    return Jinja2Templates(env=environment)


def label_words(label: int | None) -> str:
    """A label as pages show it: `1 (abnormal)`; a study no labels file has named yet (DICOM) is unlabelled."""
    return "none (unlabelled)" if label is None else f"{label} ({LABEL_WORDS[label]})"


async def get_server(request: Request) -> Server:
    return request.app.state.server


ServerDep = Annotated[Server, Depends(get_server)]


def render(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
    """Template NAME with CONTEXT (plus `request`), as an HTML response."""
    server: Server = request.app.state.server
    return server.templates.TemplateResponse(request, name, context, status_code=status)
