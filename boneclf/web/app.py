"""The application: pages (Jinja2, server-rendered) and the /api/ JSON, both over the library's queries.

`create_app(database_url, token=None, cache_dir=None, hosts=None)` is all `bonedb serve` and the tests
need. The routes live in routes/, one router per resource; this module puts the server together: its
state, the security middleware, the error handlers and the static files. Thumbnails, Grad-CAM overlays
and run reports are computed on first request and cached under `cache_dir`. The database gets review
decisions, and the image hashes a split audit computes when asked to (as `bonedb audit split` stores
them); nothing else.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from boneclf.store import open_database
from boneclf.store.reviews import default_reviewer

from .cache_dir import default_cache_dir, prepare_cache_dir
from .context import PACKAGE, Server, templates
from .errors import install_error_handlers
from .gradcam_cache import GradCamCache
from .lanes import Lane
from .routes import ROUTERS
from .routes.docs import SWAGGER_ASSETS
from .security import SecurityHeaders, TokenGuard


def create_app(database_url: str, token: str | None = None, cache_dir: Path | str | None = None,
               hosts: frozenset[str] | None = None) -> FastAPI:
    """The whole server. `token`: every request must present it (see security.py); `cache_dir`: where
    thumbnails, Grad-CAM overlays and reports are kept (default: the user's cache folder, see cache_dir.py;
    it must be writable, checked now); `hosts`: the only host names requests may address (None: any; a
    loopback server passes its names)."""
    engine = open_database(database_url)
    folder = prepare_cache_dir(Path(cache_dir) if cache_dir else default_cache_dir(database_url))
    models, audits = Lane("model", workers=1, waiting=4), Lane("audit", workers=1, waiting=4)
    server = Server(engine, database_url, folder, default_reviewer(), templates(), models, audits,
                    GradCamCache(engine, folder, models))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        models.close()
        audits.close()

    app = FastAPI(title="bonedb", description="The bonedb dataset over HTTP: datasets, studies, images, splits, "
                  "runs, and review decisions.", version="1", docs_url=None, redoc_url=None, lifespan=lifespan)
    app.state.server = server
    app.state.engine = engine
    app.add_middleware(TokenGuard, token=token, hosts=hosts)
    app.add_middleware(SecurityHeaders)  # outermost: refusals by the guard carry the headers too
    app.mount("/static/swagger", StaticFiles(directory=str(SWAGGER_ASSETS)), name="swagger")
    app.mount("/static", StaticFiles(directory=str(PACKAGE / "static")), name="static")
    install_error_handlers(app, database_url)
    for router in ROUTERS:
        app.include_router(router)
    return app
