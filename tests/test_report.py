"""The HTML report: in a real browser, runs that cannot be reported, the gallery's choice, figures' details."""

from __future__ import annotations

import base64
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine

from boneclf.cli.main import cli
from boneclf.store.queries import get_split
from boneclf.store.runs import create_run, set_status
from boneclf.vocabulary import BODY_PARTS
from boneclf.workflows.report import (
    PART_COLOURS,
    KappaRow,
    build_report,
    forest_plot,
    gallery_picks,
    learning_figure,
)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


def _missing(reason: str):
    """Locally a missing browser skips; in CI (which installs it) it fails."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def report_file(trained, tmp_path_factory) -> Path:
    result = build_report(trained.engine, [trained.bodypart_run, trained.fracture_run],
                          tmp_path_factory.mktemp("report") / "report.html")
    assert result.complete
    return Path(result.path)


def test_report_renders_in_chromium_offline_with_captions_and_alt_text(report_file):
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed: pip install playwright")
    if not Path(CHROMIUM).is_file():
        _missing(f"no {CHROMIUM}: apt-get install -y chromium")
    url = report_file.as_uri()
    errors, requests = [], []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.on("console", lambda message: message.type == "error" and errors.append(message.text))
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.on("request", lambda request: requests.append(request.url))
            page.goto(url, wait_until="load")
            pictures = page.evaluate("""() => Array.from(document.images).map(img => ({
                alt: img.alt.trim(), loaded: img.complete && img.naturalWidth > 0,
                caption: (img.closest('figure')?.querySelector('figcaption')?.textContent || '').trim()}))""")
            figures = page.evaluate("""() => Array.from(document.querySelectorAll('figure')).map(f => ({
                images: f.querySelectorAll('img').length,
                caption: (f.querySelector('figcaption')?.textContent || '').trim()}))""")
            layout = page.evaluate("""() => ({
                overflow: document.documentElement.scrollWidth - window.innerWidth,
                summaries: Array.from(document.querySelectorAll('tbody.summary')).map(b => b.textContent),
                headers: Array.from(document.querySelectorAll('th')).map(th => th.textContent.trim())})""")
            ARTIFACTS.mkdir(exist_ok=True)
            screenshot = ARTIFACTS / "report-first-screen.png"
            page.screenshot(path=str(screenshot))
            print(f"screenshot of the report's first screen: {screenshot}")
        finally:
            browser.close()
    assert errors == []
    assert requests == [url], "the report asks for nothing but itself"
    assert len(pictures) >= 15 and all(p["loaded"] for p in pictures)
    assert all(p["alt"] and p["caption"] for p in pictures), [p for p in pictures if not (p["alt"] and p["caption"])]
    assert figures and all(f["images"] == 1 and f["caption"] for f in figures)
    assert layout["overflow"] <= 0, "nothing wider than the window"
    # Summary rows are kept apart from the parts; columns have names for people.
    assert any("overall" in text for text in layout["summaries"])
    assert any("mean over parts" in text for text in layout["summaries"])
    assert "Study kappa (95% CI)" in layout["headers"]
    assert not {"image_acc", "kappa_95ci", "image_accuracy", "kappa_ci", "macro avg"} & set(layout["headers"])


def test_runs_that_cannot_be_reported_are_listed_and_fail_the_command(trained, tmp_path):
    copy = tmp_path / "copy.sqlite"
    shutil.copy(trained.folder / "bonedb.sqlite", copy)
    url = f"sqlite:///{copy}"
    engine = create_engine(url)
    with engine.connect() as conn:
        split = get_split(conn, "s")
    common = dict(stage="fracture", parts=("humerus",), architecture="cnn", parameters={},
                  image_spec={"size": 64}, split=split, label_version=None, tf_version="2.21.0",
                  runs_dir=str(tmp_path / "runs"))
    failed = create_run(engine, **common)
    set_status(engine, failed, "failed", error="ValueError: the loss became NaN at epoch 3")
    interrupted = create_run(engine, **common)
    set_status(engine, interrupted, "interrupted")
    emptied = create_run(engine, **common)  # finished, but its folder is gone
    set_status(engine, emptied, "finished", metrics={})
    engine.dispose()
    out = tmp_path / "out" / "report.html"
    runner = CliRunner()
    args = ["--database-url", url, "report", str(trained.bodypart_run), str(failed), str(interrupted), str(emptied),
            "999", "-o", str(out)]
    result = runner.invoke(cli, args)
    assert result.exit_code == 1, result.output
    errors = result.stderr.splitlines()
    assert any(line.startswith(f"error: run {failed} (failed): ValueError: the loss became NaN at epoch 3")
               for line in errors)
    assert any(line.startswith(f"error: run {interrupted} (interrupted):") and "--resume" in line for line in errors)
    assert any(line.startswith(f"error: run {emptied} (finished):") and "model.keras is missing" in line
               for line in errors)
    assert any(line.startswith("error: run 999 (unknown): no training run 999") for line in errors)
    # The report is still written, whole, with the problems first and the reportable run in full.
    page = out.read_text()
    assert page.index('id="problems"') < page.index('id="comparison"')
    assert "the loss became NaN at epoch 3" in page and f'id="run-{trained.bodypart_run}"' in page
    assert "Body part on the test subset" in page
    assert not list(out.parent.glob(".*.tmp")), "no temporary file left behind"
    summary = json.loads(runner.invoke(cli, [*args, "--json"]).output)
    assert summary["complete"] is False and summary["runs"] == [trained.bodypart_run]
    # The test fixture's data is synthetic (`bonedb synth`): every output of the report says so.
    assert summary["synthetic"] == ["mura-v1.1"] and summary["datasets"] == {"mura-v1.1": "synthetic"}
    assert result.stdout.startswith(f"wrote {out} (synthetic data: mura-v1.1)")
    assert sorted(p["run_id"] for p in summary["problems"]) == sorted([failed, interrupted, emptied, 999])


def _prediction_rows(seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for image_id in range(200):
        label = int(rng.integers(0, 2))
        rows.append({"image_id": str(image_id), "part": ("humerus", "wrist")[image_id % 2], "label": str(label),
                     "probability": f"{rng.uniform():.6f}", "path": f"/x/{image_id}.png", "study": "s"})
    return rows


def test_gallery_is_stratified_reproducible_and_not_by_confidence():
    rows = _prediction_rows(0)
    picks = gallery_picks(7, rows)
    assert set(picks) == {(part, outcome) for part in ("humerus", "wrist") for outcome in ("TP", "FP", "FN", "TN")}
    for (part, outcome), (chosen, available) in picks.items():
        assert len(chosen) == 2 and available >= 10
        truth, predicted = {"TP": (1, 1), "FP": (0, 1), "FN": (1, 0), "TN": (0, 0)}[outcome]
        assert all(r["part"] == part and int(r["label"]) == truth and (float(r["probability"]) > 0.5) == predicted
                   for r in chosen)
    assert gallery_picks(7, list(reversed(rows))) == picks, "the order of the rows does not matter"
    # Other probabilities on the same side of 0.5 choose the same images: confidence plays no part.
    rng = np.random.default_rng(1)
    redrawn = [{**r, "probability": str(rng.uniform(0.51, 1.0) if float(r["probability"]) > 0.5 else rng.uniform(0, 0.5))}
               for r in rows]

    def chosen_ids(picked):
        return {key: [r["image_id"] for r in chosen] for key, (chosen, _) in picked.items()}

    assert chosen_ids(gallery_picks(7, redrawn)) == chosen_ids(picks)
    assert gallery_picks(8, rows) != picks, "another run shows other images"


def test_epoch_ticks_are_whole_numbers_for_short_runs():
    figure = learning_figure({"loss": [0.9, 0.7], "val_loss": [1.0, 0.8], "accuracy": [0.5, 0.6],
                              "val_accuracy": [0.4, 0.5]})
    figure.canvas.draw()
    for axis in figure.axes:
        ticks = [t for t in axis.get_xticks() if axis.get_xlim()[0] <= t <= axis.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks


def test_every_part_has_its_own_colour():
    assert set(BODY_PARTS) | {"overall"} <= set(PART_COLOURS)
    assert len(set(PART_COLOURS.values())) == len(PART_COLOURS)


def test_forest_plot_draws_parts_whose_kappa_is_undefined():
    # A part with one class only has no kappa: stored NaN comes back from the database as None.
    picture = forest_plot([KappaRow("humerus", None, [None, None], 3, 0, "3 studies, all normal"),
                           KappaRow("unknown", 0.4, [0.1, 0.7], 50, 20, ""),
                           KappaRow("overall", 0.5, [0.2, 0.8], 53, 20, "")])
    assert base64.b64decode(picture).startswith(b"\x89PNG")
