"""What the server's tests share: a real uvicorn server in a thread, headless Chromium, a finished run's
record adopted by another database, and a crawl of every page reachable from the home page."""

from __future__ import annotations

import os
import re
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urldefrag, urljoin, urlsplit

import pytest
from sqlalchemy import insert

from boneclf.store.queries import get_split
from boneclf.store.runs import RunRecord
from boneclf.store.schema import TrainingRun

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
# What a page must never show: a Python dict or a list of dicts printed as such.
PYTHON_REPR = ("{'", "[{")
# Addresses a crawl does not open as pages: pictures, files, JSON.
NOT_PAGES = re.compile(r"^/(images/|static/|charts/|openapi\.json)|\.png$")


def missing(reason: str):
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but {reason}")
    pytest.skip(reason)


@contextmanager
def uvicorn_serving(app):
    """uvicorn serving APP on a free loopback port, in a thread of this process; yields its address."""
    import uvicorn

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@contextmanager
def chromium():
    """A headless Chromium page that records console errors, page errors and failed responses in
    `page.errors`."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("playwright is not installed: pip install playwright")
    if not Path(CHROMIUM).is_file():
        missing(f"no {CHROMIUM}: apt-get install -y chromium")
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.errors = []
            page.on("console", lambda message: message.type == "error" and page.errors.append(message.text))
            page.on("pageerror", lambda error: page.errors.append(str(error)))
            page.on("response", lambda r: r.status >= 400 and page.errors.append(f"{r.status} {r.url}"))
            yield page
        finally:
            browser.close()


def adopt_run(engine, run: RunRecord, split_name: str) -> int:
    """RUN's record in another database, on that database's split SPLIT_NAME, same model folder."""
    with engine.begin() as conn:
        split = get_split(conn, split_name)
        table = TrainingRun.__table__  # the record's listing-only fields (data, dataset) are no columns
        values = {k: v for k, v in run.to_dict().items()
                  if k in table.c and k not in ("id", "started_at", "finished_at")}
        values.update(split_id=split.id, split_hash=split.content_hash, started_at=run.started_at,
                      finished_at=run.finished_at, metrics=run.metrics)
        return conn.execute(insert(table).values(**values)).inserted_primary_key[0]


def page_links(base: str, current: str, hrefs: list[str]) -> list[str]:
    """The same-site pages among HREFS (found on CURRENT), without fragments, as paths with their query."""
    found = []
    for href in hrefs:
        url, _ = urldefrag(urljoin(current, href))
        parts = urlsplit(url)
        if f"{parts.scheme}://{parts.netloc}" != base or NOT_PAGES.search(parts.path):
            continue
        found.append(parts.path + (f"?{parts.query}" if parts.query else ""))
    return found
