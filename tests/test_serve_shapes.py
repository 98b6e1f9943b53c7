"""`bonedb serve` on every shape of dataset bonedb accepts: an empty database, a one-region folder set (its
part `unknown`) without splits or runs, and the same with its own split (which leaks: the source put copies
of one picture in train, val and test), a duplicate group of 8 and a finished run. MURA (seven parts,
splits, runs) is test_serve.py's.

In Chromium, on SQLite and MySQL: every page reachable from the home page answers 200, logs no console
error, shows no Python repr, and sends no request beyond this machine (/docs included).
"""

from __future__ import annotations

import random
import re
import shutil
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from boneclf.cli.main import cli
from boneclf.data.radiograph import draw_radiograph
from boneclf.store import migrate
from boneclf.store.engine import make_engine
from boneclf.store.runs import RunRecord, get_run
from boneclf.web.app import create_app
from boneclf.web.security import LOOPBACK_NAMES

from conftest import FAST
from serving import ARTIFACTS, PYTHON_REPR, adopt_run, chromium, page_links, uvicorn_serving

DATASET = "wrists"  # ingest-folder names the source's own split after the dataset
LONG_NAME = "radiograph-" + "with-a-very-long-file-name-from-a-scanner-export-" * 3 + "copy"
HTML = {"Accept": "text/html"}


def one_region_tree(root: Path, subsets: bool = True) -> Path:
    """24 pictures of one region in class folders, and one picture copied 8 times across train, val and
    test (one copy under a long name): an exact duplicate group of 8 that the source's split leaks."""
    for k in range(24):
        subset = ("train", "train", "val", "test")[k % 4] if subsets else ""
        label = ("fractured", "not fractured")[(k // 4) % 2]
        picture, _ = draw_radiograph("wrist", label == "fractured", 40, 48, random.Random(k))
        (root / subset / label).mkdir(parents=True, exist_ok=True)
        picture.save(root / subset / label / f"x{k:03d}.png")
    copied, _ = draw_radiograph("wrist", True, 40, 48, random.Random(99))
    for k, subset in enumerate(("train",) * 4 + ("val",) * 2 + ("test",) * 2):
        name = LONG_NAME if k == 0 else f"copy{k}"
        copied.save(root / (subset if subsets else "") / "fractured" / f"{name}.png")
    return root


def ingest_folder(url: str, root: Path) -> None:
    result = CliRunner().invoke(cli, ["--database-url", url, "ingest-folder", str(root), "--dataset", DATASET])
    assert result.exit_code == 0, result.output


@dataclass
class Trained:
    root: Path
    run: RunRecord


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Trained:
    """The one-region tree, and a tiny stage-2 run on its own split, trained once in SQLite (other
    databases adopt its record: same tree, same split)."""
    from boneclf.ml.training import TrainConfig, train

    folder = tmp_path_factory.mktemp("one-region")
    root = one_region_tree(folder / "data")
    url = f"sqlite:///{folder / 'bonedb.sqlite'}"
    engine = make_engine(url, create=True)
    migrate.upgrade(engine)
    ingest_folder(url, root)
    [result] = train(engine, TrainConfig(stage="fracture", split=DATASET, parts=("unknown",), image_size=32,
                                         epochs=1, patience=1, batch_size=16, runs_dir=str(folder / "runs"), **FAST),
                     verbose=0)
    run = get_run(engine, result.run_id)
    engine.dispose()
    assert run.status == "finished"
    return Trained(root, run)


def crawl(client: TestClient) -> dict[str, str]:
    """Every page reachable from the home page (TestClient): path -> its text; each must answer 200."""
    seen, queue, pages = {"/"}, deque(["/"]), {}
    while queue:
        path = queue.popleft()
        response = client.get(path, headers=HTML)
        assert response.status_code == 200, (path, response.text[:300])
        pages[path] = response.text
        if response.headers["content-type"].startswith("text/html"):
            hrefs = re.findall(r'href="([^"]+)"', response.text.replace("&amp;", "&"))
            for link in page_links("http://testserver", f"http://testserver{path}", hrefs):
                if link not in seen and "/report" not in link:
                    seen.add(link)
                    queue.append(link)
    return pages


def test_an_empty_database_and_a_one_region_set_without_splits_or_runs_answer_every_page(engine, tmp_path):
    url = engine.url.render_as_string(hide_password=False)
    with TestClient(create_app(url, cache_dir=tmp_path / "cache")) as client:
        empty = crawl(client)
        assert {"/", "/studies", "/splits", "/duplicates", "/runs", "/docs"} <= set(empty)
        assert "No dataset yet" in empty["/"] and "No training run yet" in empty["/runs"]
        ingest_folder(url, one_region_tree(tmp_path / "flat", subsets=False))
        assert client.get("/api/splits").json() == [], "a tree without subset folders has no split of its own"
        pages = crawl(client)
        assert any(path.startswith("/studies/") for path in pages) and any(p.startswith("/duplicates/") for p in pages)
        for path, text in pages.items():
            assert not any(r in text for r in PYTHON_REPR), path
        assert '<option value="unknown"' in pages["/studies"], "the part menu offers the parts the data has"
        unknown = client.get("/api/studies", params={"part": "unknown"})
        assert unknown.status_code == 200 and unknown.json()["total"] == 32


def test_the_datasets_chart_keeps_its_legend_off_the_bars(engine, tmp_path):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from boneclf.data.stats import dataset_stats
    from boneclf.web.charts import stats_figure

    ingest_folder(engine.url.render_as_string(hide_password=False), one_region_tree(tmp_path / "data"))
    figure = stats_figure(dataset_stats(engine))
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    renderer = canvas.get_renderer()
    [legend] = figure.legends
    box = legend.get_window_extent(renderer)
    bars = [patch.get_window_extent(renderer) for axis in figure.axes for patch in axis.patches]
    assert bars and not any(box.overlaps(bar) for bar in bars)


@pytest.fixture
def one_region(engine, trained, tmp_path):
    """The one-region set in this backend's database, with its split and the trained run's record."""
    root = tmp_path / "data"
    shutil.copytree(trained.root, root)
    url = engine.url.render_as_string(hide_password=False)
    ingest_folder(url, root)
    return url, adopt_run(engine, trained.run, DATASET)


def test_a_split_page_lists_its_leaks_as_a_table_and_says_what_split_show_says(engine, one_region, tmp_path):
    url, _ = one_region
    shown = CliRunner().invoke(cli, ["--database-url", url, "split", "show", DATASET])
    [audit_line] = [line for line in shown.output.splitlines() if line.startswith("audit: ")]
    assert "LEAKS" in audit_line
    with TestClient(create_app(url, cache_dir=tmp_path / "cache")) as client:
        page = client.get(f"/splits/{DATASET}").text
        recorded = re.search(r'id="recorded">(.*?)</p>', page, re.S).group(1)
        assert audit_line.removeprefix("audit: ") in re.sub(r"\s+", " ", recorded).replace("&#39;", "'") \
            .replace("&lt;", "<").replace("&gt;", ">")
        table = page.split('id="leaks"')[1].split("</table>")[0]
        assert not any(r in page for r in PYTHON_REPR)
        [group] = client.get("/api/duplicates").json()
        assert f'href="/duplicates/{group["id"]}"' in table, "a duplicate group's row links to the group"
        assert table.count('/thumbnail"') >= 6 and "/studies/" in table
        # A group of 8 lists its members' ids (it said "members": [] before) and is paged with its total.
        listed = client.get("/api/duplicates")
        assert group["size"] == 8 and len(group["image_ids"]) == 8 and "members" not in group
        assert listed.headers["x-total-count"] == "1"
        assert len(client.get(f"/api/duplicates/{group['id']}").json()["members"]) == 8


def test_every_page_works_in_chromium_on_a_one_region_set_and_nothing_leaves_this_machine(engine, one_region,
                                                                                         tmp_path, db_url):
    url, run_id = one_region
    backend = "mysql" if db_url.startswith("mysql") else "sqlite"
    outside: list[str] = []
    app = create_app(url, cache_dir=tmp_path / "cache", hosts=LOOPBACK_NAMES)
    with uvicorn_serving(app) as base, chromium() as page:

        def only_here(route):
            if route.request.url.startswith(base) or route.request.url.startswith("data:"):
                route.continue_()
            else:
                outside.append(route.request.url)
                route.abort()

        page.route("**/*", only_here)
        seen, queue, visited = {"/"}, deque(["/"]), []
        while queue:
            path = queue.popleft()
            response = page.goto(f"{base}{path}", wait_until="load")
            assert response.status == 200, (path, response.status)
            if path == "/docs":
                page.wait_for_selector("#swagger-ui .opblock", timeout=30_000)
            text = page.inner_text("body")
            assert not any(r in text for r in PYTHON_REPR), (path, text[:500])
            assert page.errors == [], (path, page.errors)
            visited.append(path)
            shot = {"/": "home", "/studies": "studies", f"/splits/{DATASET}": "split", "/duplicates": "duplicates",
                    f"/runs/{run_id}": "run", "/docs": "docs"}.get(path)
            if path.startswith("/duplicates/") and "/reviews" not in path:
                shot = "duplicate"
                # Long paths wrap inside their caption instead of running out of it.
                assert page.evaluate("""() => Array.from(document.querySelectorAll('#members figcaption'))
                    .every(f => f.scrollWidth <= f.clientWidth + 1)"""), "a caption overflows"
            if path.startswith(f"/runs/{run_id}/studies/"):
                shot = "gradcam"
            if shot:
                page.screenshot(path=str(ARTIFACTS / f"serve-one-region-{backend}-{shot}.png"), full_page=True)
            hrefs = page.eval_on_selector_all("a[href]", "links => links.map(a => a.href)")
            for link in page_links(base, page.url, hrefs):
                if link not in seen:
                    seen.add(link)
                    queue.append(link)
    assert outside == [], f"requests beyond this machine: {outside}"
    for expected in ["/", "/studies", "/splits", f"/splits/{DATASET}", "/duplicates", "/runs", f"/runs/{run_id}",
                     f"/runs/{run_id}/report", "/docs"]:
        assert expected in visited, expected
    assert any(p.startswith(f"/runs/{run_id}/studies/") for p in visited), "the run's predictions on a study"
    assert any(p.startswith("/duplicates/") for p in visited) and any(p.startswith("/studies/") for p in visited)


def test_a_synthetic_dataset_is_called_synthetic_on_the_home_page_and_in_the_api(engine, mura, tmp_path):
    """Issue 20: "label synthetic data as synthetic in every output". The demo's data is named mura-v1.1, like
    the real download; the server's list of datasets must not pass it off as MURA."""
    from boneclf.data.ingest import ingest_mura

    ingest_mura(engine, mura)  # drawn by `bonedb synth`: its marker lies beside the CSVs
    url = engine.url.render_as_string(hide_password=False)
    with TestClient(create_app(url, cache_dir=tmp_path / "cache")) as client:
        [listed] = client.get("/api/datasets").json()
        assert listed["name"] == "mura-v1.1" and listed["synthetic"] is True
        row = client.get("/", headers=HTML).text.split('id="datasets"')[1].split("</tr>")[1]
        assert "mura-v1.1" in row and "synthetic" in row, row
