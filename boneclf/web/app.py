"""The application: pages (Jinja2, server-rendered) and the /api/ JSON, both over the library's queries.

`create_app(database_url, token=None, cache_dir=...)` is all `bonedb serve` and the tests need.
Thumbnails, Grad-CAM overlays and run reports are computed on first request and cached under
`cache_dir`. The database gets review decisions, and the image hashes a split audit computes when
asked to (as `bonedb audit split` stores them); nothing else.
"""

from __future__ import annotations

import io
import json
import logging
import threading
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from urllib.parse import urlencode

import jinja2
from fastapi import FastAPI, Form, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel
from sqlalchemy.exc import SQLAlchemyError

from boneclf.data.browse import (
    SUBSETS,
    StudyFilter,
    browse_studies,
    filter_choices,
    image_file,
    list_datasets,
    studies_of_images,
    study_detail,
    unhashed_images,
)
from boneclf.data.stats import dataset_stats
from boneclf.errors import BonedbError, NotFound
from boneclf.files import atomic_write
from boneclf.results import fmt, plain
from boneclf.store import open_database
from boneclf.store.duplicates import get_duplicate_group, list_duplicate_groups
from boneclf.store.engine import scrub
from boneclf.store.provenance import label_history
from boneclf.store.reviews import DUPLICATE_DECISIONS, LABEL_DECISIONS, default_reviewer, review_group, review_study
from boneclf.store.runs import get_run, list_runs
from boneclf.vocabulary import BODY_PARTS, BODYPART, FRACTURE, LABEL_WORDS, SOURCE_SPLITS

from . import charts, thumbnails
from .security import TokenGuard

PACKAGE = resources.files("boneclf.web")
GROUPS_PER_PAGE = 50
_log = logging.getLogger("bonedb.serve")


class ReviewIn(BaseModel):
    """A review decision as the API takes it; the reviewer defaults to the server's OS user."""

    decision: str
    note: str | None = None
    reviewer: str | None = None


@dataclass
class Settings:
    cache_dir: Path
    reviewer: str


def create_app(database_url: str, token: str | None = None, cache_dir: Path | str | None = None,
               hosts: frozenset[str] | None = None) -> FastAPI:
    """The whole server. `token`: every request must present it (see security.py); `cache_dir`: where
    thumbnails, Grad-CAM overlays and reports are kept (default: .bonedb-cache in the current folder);
    `hosts`: the only host names requests may address (None: any; a loopback server passes its names)."""
    engine = open_database(database_url)
    settings = Settings(Path(cache_dir or ".bonedb-cache").resolve(), default_reviewer())
    app = FastAPI(title="bonedb", description="The bonedb dataset over HTTP: datasets, studies, images, splits, "
                  "runs, and review decisions.", version="1")
    app.state.engine = engine
    app.add_middleware(TokenGuard, token=token, hosts=hosts)
    app.mount("/static", StaticFiles(directory=str(PACKAGE / "static")), name="static")
    environment = jinja2.Environment(loader=jinja2.FileSystemLoader(str(PACKAGE / "templates")), autoescape=True,
                                     undefined=jinja2.StrictUndefined)  # a misspelt field fails, not blanks
    templates = Jinja2Templates(env=environment)
    environment.globals.update(LABEL_WORDS=LABEL_WORDS, BODYPART=BODYPART, fmt=fmt)
    gradcams = GradCamCache(engine, settings.cache_dir)

    def page(request: Request, name: str, status: int = 200, **context) -> HTMLResponse:
        return templates.TemplateResponse(request, name, context, status_code=status)

    # -- errors: a page or JSON saying what is wrong; never the database URL or a traceback ---------------
    def wants_json(request: Request) -> bool:
        """The API, pictures and programs get JSON; a browser opening a page gets a page."""
        return request.url.path.startswith("/api/") or "text/html" not in request.headers.get("accept", "")

    @app.exception_handler(NotFound)
    async def not_found(request: Request, exc: NotFound):
        if wants_json(request):
            return JSONResponse({"detail": str(exc)}, status_code=404)
        return page(request, "error.html", 404, title="Not found", message=str(exc))

    @app.exception_handler(BonedbError)
    async def bad_request(request: Request, exc: BonedbError):
        if wants_json(request):
            return JSONResponse({"detail": str(exc)}, status_code=400)
        return page(request, "error.html", 400, title="Cannot do that", message=str(exc))

    @app.exception_handler(SQLAlchemyError)
    async def database_error(request: Request, exc: SQLAlchemyError):
        # The driver's message can hold the URL: the response says only what kind of failure it was;
        # the server's log gets the first line, password masked.
        detail = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        _log.error("%s %s: database error: %s", request.method, request.url.path, scrub(detail, database_url))
        return JSONResponse({"detail": f"database error ({type(exc).__name__}); see the server's log"},
                            status_code=500)

    # -- datasets and stats ------------------------------------------------------------------------------
    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def datasets_page(request: Request):
        return page(request, "datasets.html", datasets=list_datasets(engine), stats=dataset_stats(engine))

    @app.get("/api/datasets", tags=["datasets"])
    def api_datasets():
        """Every dataset with its image, study and patient counts."""
        return plain(list_datasets(engine))

    @app.get("/api/stats", tags=["datasets"])
    def api_stats(dataset: str | None = None):
        """Counts per dataset x body part x source split x label (as `bonedb stats`)."""
        return dataset_stats(engine, dataset).to_dict()

    @app.get("/charts/stats.png", tags=["datasets"])
    def stats_chart(dataset: str | None = None):
        """Images per body part and label, one panel per dataset."""
        return Response(charts.stats_png(dataset_stats(engine, dataset)), media_type="image/png")

    # -- studies -----------------------------------------------------------------------------------------
    def study_filter(dataset, part, source_split, label, split, subset) -> StudyFilter:
        return StudyFilter(dataset or None, part or None, source_split or None,
                           None if label in (None, "") else _int(label, "label"), split or None, subset or None)

    @app.get("/studies", response_class=HTMLResponse, include_in_schema=False)
    def studies_page(request: Request, dataset: str = "", part: str = "", source_split: str = "", label: str = "",
                     split: str = "", subset: str = "", page_number: int = Query(1, alias="page")):
        where = study_filter(dataset, part, source_split, label, split, subset)
        found = browse_studies(engine, where, page_number)
        chosen = dict(dataset=dataset, part=part, source_split=source_split, label=label, split=split, subset=subset)
        given = {k: v for k, v in chosen.items() if v}
        datasets, splits = filter_choices(engine)
        return page(request, "studies.html", found=found, chosen=chosen, datasets=datasets,
                    splits=splits, parts=BODY_PARTS, source_splits=SOURCE_SPLITS, subsets=SUBSETS,
                    page_link=lambda n: "/studies?" + urlencode({**given, "page": n}))

    @app.get("/api/studies", tags=["studies"])
    def api_studies(dataset: str | None = None, part: str | None = None, source_split: str | None = None,
                    label: int | None = None, split: str | None = None, subset: str | None = None,
                    page: int = 1, per_page: int = 48):
        """One page of studies, filtered, each with the ids of its images."""
        where = StudyFilter(dataset, part, source_split, label, split, subset)
        return browse_studies(engine, where, page, per_page).to_dict()

    @app.get("/studies/{study_id}", response_class=HTMLResponse, include_in_schema=False)
    def study_page(request: Request, study_id: int):
        study = study_detail(engine, study_id)
        runs = [r for r in list_runs(engine, status="finished") if r.stage == BODYPART or study.part in r.parts]
        return page(request, "study.html", study=study, runs=runs, decisions=LABEL_DECISIONS,
                    reviewer=settings.reviewer)

    @app.get("/api/studies/{study_id}", tags=["studies"])
    def api_study(study_id: int):
        """A study: its images (with their subset in each split), label history, reviews and ingests."""
        return study_detail(engine, study_id).to_dict()

    @app.post("/studies/{study_id}/reviews", include_in_schema=False)
    def review_form(study_id: int, decision: str = Form(...), note: str = Form(""), reviewer: str = Form("")):
        review_study(engine, study_id, decision, note=note, reviewer=reviewer)
        return RedirectResponse(f"/studies/{study_id}#reviews", status_code=303)

    @app.post("/api/studies/{study_id}/reviews", tags=["studies"], status_code=201)
    def api_review(study_id: int, review: ReviewIn):
        """Record a decision on a study's label: `label confirmed`, or `label disputed` with a note.
        The label itself is never changed (a relabel goes through `bonedb ingest`)."""
        return review_study(engine, study_id, review.decision, note=review.note, reviewer=review.reviewer).to_dict()

    @app.get("/api/history", tags=["studies"])
    def api_history(dataset: str | None = None, since: int | None = None):
        """Label changes by ingests and review decisions (as `bonedb history`)."""
        return label_history(engine, dataset=dataset, since=since).to_dict()

    # -- duplicate groups --------------------------------------------------------------------------------
    def groups_page_of(dataset: str | None, page_number: int):
        if page_number < 1:
            raise BonedbError("page from 1")
        with engine.connect() as conn:
            try:
                return list_duplicate_groups(conn, dataset, GROUPS_PER_PAGE + 1, (page_number - 1) * GROUPS_PER_PAGE)
            except BonedbError as exc:  # an unknown dataset
                raise NotFound(str(exc)) from None

    def group_of(group_id: int):
        with engine.connect() as conn:
            try:
                return get_duplicate_group(conn, group_id)
            except BonedbError as exc:
                raise NotFound(str(exc)) from None

    @app.get("/duplicates", response_class=HTMLResponse, include_in_schema=False)
    def duplicates_page(request: Request, dataset: str = "", page_number: int = Query(1, alias="page")):
        groups = groups_page_of(dataset or None, page_number)
        return page(request, "duplicates.html", groups=groups[:GROUPS_PER_PAGE], dataset=dataset,
                    page_number=page_number, more=len(groups) > GROUPS_PER_PAGE)

    @app.get("/api/duplicates", tags=["duplicates"])
    def api_duplicates(dataset: str | None = None, page: int = 1):
        """A page of duplicate groups (50), largest first, with their size and source splits."""
        return plain(groups_page_of(dataset, page)[:GROUPS_PER_PAGE])

    @app.get("/duplicates/{group_id}", response_class=HTMLResponse, include_in_schema=False)
    def duplicate_page(request: Request, group_id: int):
        from boneclf.store.reviews import reviews_of

        group = group_of(group_id)
        return page(request, "duplicate.html", group=group, decisions=DUPLICATE_DECISIONS,
                    reviewer=settings.reviewer, reviews=reviews_of(engine, group_id=group_id),
                    study_of=studies_of_images(engine, [m.image_id for m in group.members]))

    @app.get("/api/duplicates/{group_id}", tags=["duplicates"])
    def api_duplicate(group_id: int):
        """One duplicate group with every member's identity, label and source split, and its reviews."""
        from boneclf.store.reviews import reviews_of

        return {**group_of(group_id).to_dict(), "reviews": plain(reviews_of(engine, group_id=group_id))}

    @app.post("/duplicates/{group_id}/reviews", include_in_schema=False)
    def duplicate_review_form(group_id: int, decision: str = Form(...), note: str = Form(""),
                              reviewer: str = Form("")):
        review_group(engine, group_id, decision, note=note, reviewer=reviewer)
        return RedirectResponse(f"/duplicates/{group_id}#reviews", status_code=303)

    @app.post("/api/duplicates/{group_id}/reviews", tags=["duplicates"], status_code=201)
    def api_duplicate_review(group_id: int, review: ReviewIn):
        """Record `duplicate confirmed` or `duplicate rejected` on a group, with its members as they are now."""
        return review_group(engine, group_id, review.decision, note=review.note, reviewer=review.reviewer).to_dict()

    # -- images: by id only, from inside the dataset's root --------------------------------------------
    @app.get("/images/{image_id}", tags=["images"])
    def image(image_id: int):
        """The image file itself."""
        return FileResponse(image_file(engine, image_id).path, headers={"Cache-Control": "private, max-age=3600"})

    @app.get("/images/{image_id}/thumbnail", tags=["images"])
    def image_thumbnail(image_id: int, size: int = 128):
        """A JPEG thumbnail (longest side 128 or 256), made once and cached by content hash."""
        if size not in thumbnails.SIZES:
            raise BonedbError(f"size {size}: choose from {', '.join(map(str, thumbnails.SIZES))}")
        found = image_file(engine, image_id)
        target = thumbnails.thumbnail(settings.cache_dir, found.path, size, found.content_hash)
        return FileResponse(target, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=86400"})

    # -- splits ------------------------------------------------------------------------------------------
    @app.get("/splits", response_class=HTMLResponse, include_in_schema=False)
    def splits_page(request: Request):
        from boneclf.data.splits import list_splits

        return page(request, "splits.html", splits=list_splits(engine))

    @app.get("/api/splits", tags=["splits"])
    def api_splits():
        """Every split with its image count and how it was made."""
        from boneclf.data.splits import list_splits

        return plain(list_splits(engine))

    def split_and_audit(name: str, near: bool, hash_missing: bool):
        """The split's summary, and its audit unless images lack hashes and hashing them was not asked
        for: hashing reads every such file (minutes on a full MURA) and stores the hashes, as
        `bonedb audit split` does."""
        from boneclf.data.audit import audit_split
        from boneclf.data.splits import split_summary

        try:
            summary = split_summary(engine, name)
        except BonedbError as exc:
            raise NotFound(str(exc)) from None
        unhashed = unhashed_images(engine, name)
        if unhashed and not hash_missing:
            return summary, None, unhashed
        return summary, audit_split(engine, name, near=near), unhashed

    @app.get("/splits/{name}", response_class=HTMLResponse, include_in_schema=False)
    def split_page(request: Request, name: str, near: bool = False, hash_missing: bool = Query(False, alias="hash")):
        summary, audit, unhashed = split_and_audit(name, near, hash_missing)
        return page(request, "split.html", summary=summary, audit=audit, near=near, unhashed=unhashed)

    @app.get("/api/splits/{name}", tags=["splits"])
    def api_split(name: str, near: bool = False, hash_missing: bool = Query(False, alias="hash")):
        """A split's counts per subset x part x pinned label, and its leak audit (near duplicates with near=true).
        Images without hashes (ingested without --verify) leave the audit null unless hash=true: they are
        then read, hashed and their hashes stored, as `bonedb audit split` does."""
        summary, audit, unhashed = split_and_audit(name, near, hash_missing)
        return {"summary": summary.to_dict(), "audit": audit.to_dict() if audit else None, "unhashed": unhashed}

    # -- runs ----------------------------------------------------------------------------------------------
    def comparison():
        from boneclf.ml.evaluation import compare_runs

        runs = list_runs(engine)
        return runs, compare_runs(engine, [r.id for r in runs])

    @app.get("/runs", response_class=HTMLResponse, include_in_schema=False)
    def runs_page(request: Request):
        runs, rows = comparison()
        return page(request, "runs.html", runs=runs, rows=rows)

    @app.get("/api/runs", tags=["runs"])
    def api_runs():
        """Every training run, and the comparison table (latest test evaluation, else validation)."""
        runs, rows = comparison()
        return {"runs": plain(runs), "comparison": plain(rows)}

    def known_run(run_id: int):
        try:
            return get_run(engine, run_id)
        except BonedbError as exc:
            raise NotFound(str(exc)) from None

    def sample_studies(run, limit: int = 12):
        """Studies of the run's test subset (of its parts) to open predictions on."""
        parts = run.parts if run.stage == FRACTURE else [None]
        found = []
        for part in parts:
            found += browse_studies(engine, StudyFilter(part=part, split=run.split_name, subset="test"),
                                    1, max(1, limit // len(parts))).studies
        return found

    @app.get("/runs/{run_id}", response_class=HTMLResponse, include_in_schema=False)
    def run_page(request: Request, run_id: int):
        run = known_run(run_id)
        return page(request, "run.html", run=run, studies=sample_studies(run) if run.status == "finished" else [],
                    metrics=json.dumps(plain(run.metrics), indent=2))

    @app.get("/api/runs/{run_id}", tags=["runs"])
    def api_run(run_id: int):
        """One run: its options, image spec, status and final validation metrics."""
        return known_run(run_id).to_dict()

    @app.get("/runs/{run_id}/report", response_class=HTMLResponse, tags=["runs"])
    def run_report(run_id: int, refresh: bool = False):
        """The run's `bonedb report`, made on first request (evaluating the run if it has no test evaluation)."""
        from boneclf.workflows.report import build_report

        known_run(run_id)
        target = settings.cache_dir / "reports" / f"run{run_id}.html"
        with gradcams.lock:  # the report may evaluate: one TensorFlow job at a time
            if refresh or not target.is_file():
                build_report(engine, [run_id], target)
        return FileResponse(target, media_type="text/html")

    @app.get("/runs/{run_id}/studies/{study_id}", response_class=HTMLResponse, include_in_schema=False)
    def run_study_page(request: Request, run_id: int, study_id: int):
        run = known_run(run_id)
        study = study_detail(engine, study_id)
        return page(request, "run_study.html", run=run, study=study,
                    predictions=gradcams.predictions(run_id, study.images))

    @app.get("/api/runs/{run_id}/studies/{study_id}", tags=["runs"])
    def api_run_study(run_id: int, study_id: int):
        """The run's prediction on each image of a study, with the URL of its Grad-CAM overlay."""
        known_run(run_id)
        study = study_detail(engine, study_id)
        return {"run": run_id, "study": study_id, "images": gradcams.predictions(run_id, study.images)}

    @app.get("/runs/{run_id}/gradcam/{image_id}.png", tags=["runs"])
    def gradcam_png(run_id: int, image_id: int):
        """The Grad-CAM overlay of one image under one run, computed on first request and cached."""
        known_run(run_id)
        found = image_file(engine, image_id)
        prediction = gradcams.predict_one(run_id, found)
        return FileResponse(prediction["file"], media_type="image/png")

    return app


def _int(text: str, name: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise BonedbError(f"{name}: a whole number, not {text!r}") from None


class GradCamCache:
    """Predictions and Grad-CAM overlays per (run, image content), computed once and kept on disk.

    One explainer (model + compiled Grad-CAM) per run is kept in memory; TensorFlow work is serialized
    by one lock, so two requests never run a model at once on this 2-core server.
    """

    def __init__(self, engine, cache_dir: Path):
        self.engine = engine
        self.cache_dir = cache_dir
        self.lock = threading.Lock()
        self._explainers: dict[int, object] = {}

    def _paths(self, run_id: int, digest: str) -> tuple[Path, Path]:
        folder = self.cache_dir / "gradcam" / f"run{run_id}"
        return folder / f"{digest}.png", folder / f"{digest}.json"

    def predict_one(self, run_id: int, found) -> dict:
        digest = found.content_hash or thumbnails.file_hash(found.path)
        picture, facts = self._paths(run_id, digest)
        if not facts.is_file():
            with self.lock:
                if not facts.is_file():
                    self._compute(run_id, found.path, picture, facts)
        return {**json.loads(facts.read_text()), "file": picture}

    def predictions(self, run_id: int, images) -> list[dict]:
        rows = []
        for image in images:
            found = image_file(self.engine, image.id)
            prediction = self.predict_one(run_id, found)
            rows.append({"image_id": image.id, "number": image.number, "outcome": prediction["outcome"],
                         "probability": prediction["probability"], "error": prediction["error"],
                         "gradcam": f"/runs/{run_id}/gradcam/{image.id}.png" if prediction["error"] is None else None})
        return rows

    def _compute(self, run_id: int, source: Path, picture: Path, facts: Path) -> None:
        from boneclf.ml.predict import RunExplainer

        if run_id not in self._explainers:
            self._explainers[run_id] = RunExplainer(self.engine, run_id)
        [explained] = self._explainers[run_id].explain([source.read_bytes()])
        picture.parent.mkdir(parents=True, exist_ok=True)
        if explained.overlay is not None:
            buffer = io.BytesIO()
            explained.overlay.save(buffer, "PNG")
            atomic_write(picture, buffer.getvalue())
        atomic_write(facts, json.dumps({"outcome": explained.outcome, "probability": explained.probability,
                                  "error": explained.error}).encode())
