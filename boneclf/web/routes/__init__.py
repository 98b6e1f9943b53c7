"""One router per resource. Each page has one data function (a FastAPI dependency) that both its HTML
route and its /api/ route depend on, as datasette's views have one `data()`: the page and the API
show the same data, fetched and parsed once."""

from __future__ import annotations

from . import datasets, docs, duplicates, images, labels, reviews, runs, splits, studies

ROUTERS = [datasets.router, studies.router, reviews.router, labels.router, duplicates.router, splits.router,
           runs.router, images.router, docs.router]
