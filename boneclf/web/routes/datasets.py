"""The home page: every dataset with its counts, and images per body part, source split and label."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response

from boneclf.data.browse import DatasetSummary, list_datasets
from boneclf.data.stats import DatasetStats, dataset_stats
from boneclf.results import plain

from .. import charts
from ..context import ServerDep, render

router = APIRouter(tags=["datasets"])


def datasets_data(server: ServerDep) -> list[DatasetSummary]:
    return list_datasets(server.engine)


def stats_data(server: ServerDep, dataset: str | None = None) -> DatasetStats:
    return dataset_stats(server.engine, dataset or None)


Datasets = Annotated[list[DatasetSummary], Depends(datasets_data)]
Stats = Annotated[DatasetStats, Depends(stats_data)]


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def datasets_page(request: Request, datasets: Datasets, stats: Stats) -> HTMLResponse:
    return render(request, "datasets.html", datasets=datasets, stats=stats)


@router.get("/api/datasets")
async def api_datasets(datasets: Datasets) -> list[dict]:
    """Every dataset with its image, study and patient counts."""
    return plain(datasets)


@router.get("/api/stats")
async def api_stats(stats: Stats) -> dict:
    """Counts per dataset x body part x source split x label (as `bonedb stats`)."""
    return stats.to_dict()


@router.get("/charts/stats.png")
def stats_chart(stats: Stats) -> Response:
    """Images per body part and label, one panel per dataset."""
    return Response(charts.stats_png(stats), media_type="image/png")
