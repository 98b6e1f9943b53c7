"""Training runs: the comparison, a run's page, its report, and its predictions with Grad-CAM on a study.

Reports and Grad-CAM run a model: they are computed in the server's model lane (one TensorFlow job at a
time, off the request loop) and cached. A report is rebuilt only by a POST (the page's button), never by
a link: a GET that recomputed could be sent by anyone, any number of times.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse
from starlette.concurrency import run_in_threadpool

from boneclf.data.browse import (
    ImageFile,
    StudyDetail,
    StudyFilter,
    StudyRow,
    browse_studies,
    image_file,
    study_detail,
)
from boneclf.errors import BonedbError
from boneclf.ml.metrics import format_interval
from boneclf.results import fmt, plain
from boneclf.store.runs import RunRecord, get_run, list_runs
from boneclf.vocabulary import FRACTURE, FRACTURE_CLASSES

from ..context import Server, ServerDep, render
from ..errors import CannotShow

router = APIRouter(tags=["runs"])
# A report is a document with no script; its styles are inline and its figures data: URLs.
REPORT_POLICY = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; "
                 "form-action 'none'; frame-ancestors 'none'")


@dataclass
class RunsView:
    runs: list[RunRecord]
    comparison: list  # ComparisonRow: the latest test evaluation of each run, else its validation figures

    def to_dict(self) -> dict:
        return {"runs": plain(self.runs), "comparison": plain(self.comparison)}


def runs_data(server: ServerDep) -> RunsView:
    from boneclf.ml.comparison import compare_runs

    runs = list_runs(server.engine)
    return RunsView(runs, compare_runs(server.engine, [r.id for r in runs]))


def run_data(server: ServerDep, run_id: int) -> RunRecord:
    return get_run(server.engine, run_id)


Runs = Annotated[RunsView, Depends(runs_data)]
Run = Annotated[RunRecord, Depends(run_data)]


@router.get("/runs", response_class=HTMLResponse, include_in_schema=False)
async def runs_page(request: Request, view: Runs) -> HTMLResponse:
    from boneclf.ml.comparison import interval_verdict

    return render(request, "runs.html", runs=view.runs, rows=view.comparison,
                  verdicts=interval_verdict(view.comparison))


@router.get("/api/runs")
async def api_runs(view: Runs) -> dict:
    """Every training run, and the comparison table (latest test evaluation, else validation)."""
    return view.to_dict()


def sample_studies(server: Server, run: RunRecord, limit: int = 12) -> list[StudyRow]:
    """Studies of the run's test subset (of each of its parts) to open predictions on."""
    parts = run.parts if run.stage == FRACTURE else [None]
    found: list[StudyRow] = []
    for part in parts:
        found += browse_studies(server.engine, StudyFilter(part=part, split=run.split_name, subset="test"),
                                1, max(1, limit // len(parts))).studies
    return found


@router.get("/runs/{run_id}", response_class=HTMLResponse, include_in_schema=False)
def run_page(request: Request, server: ServerDep, run: Run) -> HTMLResponse:
    studies = sample_studies(server, run) if run.status == "finished" else []
    return render(request, "run.html", run=run, studies=studies, metrics=metric_view(plain(run.metrics)))


@dataclass
class MetricTable:
    """A per-class report or a confusion matrix, as a small table of its own."""

    title: str
    headers: list[str]
    rows: list[list[str]]


@dataclass
class MetricView:
    figures: list[tuple[str, str]]  # (name, value): "study kappa", "0.412"; intervals "0.31 to 0.52"
    tables: list[MetricTable]


def metric_view(metrics: dict | None) -> MetricView:
    """A run's metrics for people: figures by name (intervals as "a to b"), and each per-class report and
    confusion matrix as a table of its own rather than a list; `/api/runs/ID` keeps the JSON."""
    view = MetricView([], [])
    _metric_figures(metrics or {}, "", view, (metrics or {}).get("class_names") or list(FRACTURE_CLASSES))
    return view


def _metric_figures(metrics: dict, prefix: str, view: MetricView, classes: list[str]) -> None:
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if key == "class_names" or value is None:
            continue  # the confusion table's headers
        if key == "report" and isinstance(value, dict):
            view.tables.append(MetricTable(f"{prefix}per-class report".capitalize(),
                                           ["class", "precision", "recall", "F1", "support"],
                                           [[label, *(_number(scores.get(k)) for k in ("precision", "recall", "f1")),
                                             str(scores.get("support", ""))] for label, scores in value.items()]))
        elif key == "confusion" and isinstance(value, list):
            # Class names for the headers when the run recorded as many as the matrix has rows; else numbers.
            names = classes if len(classes) == len(value) else [str(k) for k in range(len(value))]
            rows = [[c, *map(str, row)] for c, row in zip(names, value)]
            view.tables.append(MetricTable(f"{prefix}confusion matrix (rows: truth, columns: prediction)".capitalize(),
                                           ["truth", *names], rows))
        elif isinstance(value, dict):
            _metric_figures(value, f"{name} ", view, classes)
        elif key.endswith("_ci") and isinstance(value, list):
            view.figures.append((f"{name.removesuffix('_ci')} 95% CI", format_interval(value) or "n/a"))
        else:
            view.figures.append((name.replace("_", " "), _number(value)))


def _number(value) -> str:
    return fmt(value) if isinstance(value, float) else "" if value is None else str(value)


@router.get("/api/runs/{run_id}")
async def api_run(run: Run) -> dict:
    """One run: its options, image spec, status and final validation metrics."""
    return run.to_dict()


def _build_report(server: Server, run_id: int, target: Path) -> None:
    from boneclf.workflows.report import build_report  # imported here, in the lane: it loads TensorFlow

    build_report(server.engine, [run_id], target)


async def _report(server: Server, run: RunRecord, rebuild: bool) -> Path:
    target = server.cache_dir / "reports" / f"run{run.id}.html"
    if rebuild or not await run_in_threadpool(target.is_file):
        # The report may evaluate the run: model work. Requests for it while it is made share that job.
        await server.models.run(("report", run.id), partial(_build_report, server, run.id, target))
    return target


@router.get("/runs/{run_id}/report", response_class=HTMLResponse)
async def run_report(server: ServerDep, run: Run, refresh: bool = False) -> FileResponse:
    """The run's `bonedb report`, made on first request (evaluating the run if it has no test evaluation).
    To make it again, POST to this address (the run page's button)."""
    if refresh:
        raise BonedbError("a report is made again by a POST to this address (the button on the run's page), "
                          "not by a link")
    return FileResponse(await _report(server, run, rebuild=False), media_type="text/html",
                        headers={"Content-Security-Policy": REPORT_POLICY})


@router.post("/runs/{run_id}/report")
async def rebuild_report(server: ServerDep, run: Run) -> RedirectResponse:
    """Make the run's report again (after a new evaluation, say), then show it."""
    await _report(server, run, rebuild=True)
    return RedirectResponse(f"/runs/{run.id}/report", status_code=303)


@dataclass
class RunStudyView:
    run: RunRecord
    study: StudyDetail
    predictions: list[dict]  # per image: outcome, probability, error, and the overlay's address

    def to_dict(self) -> dict:
        return {"run": self.run.id, "study": self.study.id, "data": self.run.data, "dataset": self.run.dataset,
                "images": self.predictions}


async def run_study_data(server: ServerDep, run: Run, study_id: int) -> RunStudyView:
    def study_and_files() -> tuple[StudyDetail, list[ImageFile]]:
        study = study_detail(server.engine, study_id)
        return study, [image_file(server.engine, image.id) for image in study.images]

    study, files = await run_in_threadpool(study_and_files)
    explained = await server.gradcams.explain(run.id, files)
    rows = [{"image_id": image.id, "number": image.number, "outcome": e.outcome, "probability": e.probability,
             "error": e.error, "gradcam": f"/runs/{run.id}/gradcam/{image.id}.png" if e.error is None else None}
            for image, e in zip(study.images, explained)]
    return RunStudyView(run, study, rows)


RunStudy = Annotated[RunStudyView, Depends(run_study_data)]


@router.get("/runs/{run_id}/studies/{study_id}", response_class=HTMLResponse, include_in_schema=False)
async def run_study_page(request: Request, view: RunStudy) -> HTMLResponse:
    return render(request, "run_study.html", run=view.run, study=view.study, predictions=view.predictions)


@router.get("/api/runs/{run_id}/studies/{study_id}")
async def api_run_study(view: RunStudy) -> dict:
    """The run's prediction on each image of a study, with the URL of its Grad-CAM overlay."""
    return view.to_dict()


@router.get("/runs/{run_id}/gradcam/{image_id}.png")
async def gradcam_png(server: ServerDep, run: Run, image_id: int) -> FileResponse:
    """The Grad-CAM overlay of one image under one run, computed on first request and cached. An image the
    model cannot read answers 422 with the reason."""
    found = await run_in_threadpool(image_file, server.engine, image_id)
    [explained] = await server.gradcams.explain(run.id, [found])
    if explained.error is not None:
        raise CannotShow(f"image {image_id} has no Grad-CAM under run {run.id}: {explained.error}")
    return FileResponse(explained.picture, media_type="image/png")
