"""`bonedb serve`: every endpoint on SQLite and MySQL (bad cases included), the token guard, and the
pages in headless Chromium against a real uvicorn server.

One tiny stage-2 model is trained once for the module (32 px, one epoch): the run pages and
Grad-CAM need a finished run, not a good one. Each database gets that run's record pointing at
the same model folder, so the MySQL tests need no training of their own.
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, select, text, update
from sqlalchemy.engine import make_url

from boneclf.cli.main import cli
from boneclf.data.ingest import ingest_mura
from boneclf.data.splits import SplitOptions, create_split
from boneclf.errors import BonedbError
from boneclf.store import migrate
from boneclf.store.engine import make_engine
from boneclf.store.runs import RunRecord, get_run
from boneclf.store.schema import Image, Study
from boneclf.vocabulary import BODY_PARTS
from boneclf.web.app import create_app
from boneclf.web.security import LOOPBACK_NAMES

from conftest import FAST
from serving import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, adopt_run, chromium, missing, uvicorn_serving

# Every picture in the window has loaded (those further down load lazily, when scrolled to).
IMAGES_SHOWN = """() => Array.from(document.images).filter(i => i.getBoundingClientRect().top < innerHeight)
    .every(i => i.complete && i.naturalWidth > 0)"""
SPLIT = SplitOptions("mura-v1.1", BODY_PARTS, test_from="carve", val=0.15, test=0.15, seed=1)


def _load(engine, root: Path) -> None:
    ingest_mura(engine, root)
    create_split(engine, "s", SPLIT)
    _duplicate_group(engine, root)


def _duplicate_group(engine, root: Path) -> int:
    """Two images of different studies made the same file, then the dataset's groups computed (an exact group
    for them), so that no page's audit has to compute them later and change the groups' ids."""
    from boneclf.data.duplicates import compute_duplicates

    with engine.begin() as conn:
        first = conn.execute(select(Image.id, Image.path).order_by(Image.id).limit(1)).one()
        other = conn.execute(select(Image.id, Image.path).join(Study, Study.id == Image.study_id)
                             .where(Study.id != select(Image.study_id).where(Image.id == first.id).scalar_subquery())
                             .order_by(Image.id.desc()).limit(1)).one()
        shutil.copy(root / first.path, root / other.path)
    compute_duplicates(engine, "mura-v1.1")
    return first.id


@dataclass
class TinyRun:
    url: str
    folder: Path
    run: RunRecord


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, synth_template) -> TinyRun:
    """The synthetic MURA in SQLite with one finished stage-2 run (shared over the parts)."""
    from boneclf.ml.training import TrainConfig, train

    folder = tmp_path_factory.mktemp("serve")
    shutil.copytree(synth_template, folder / "data")
    url = f"sqlite:///{folder / 'bonedb.sqlite'}"
    engine = make_engine(url, create=True)
    migrate.upgrade(engine)
    _load(engine, folder / "data")
    [result] = train(engine, TrainConfig(stage="fracture", split="s", shared=True, image_size=32, epochs=1,
                                         patience=1, batch_size=32, runs_dir=str(folder / "runs"), **FAST),
                     verbose=0)
    run = get_run(engine, result.run_id)
    engine.dispose()
    assert run.status == "finished"
    return TinyRun(url, folder, run)


def _adopt(engine, run: RunRecord) -> int:
    """The tiny run's record in another database, on that database's split "s", same model folder."""
    return adopt_run(engine, run, "s")


@dataclass
class Served:
    client: TestClient
    url: str
    engine: object
    run_id: int
    cache: Path


@pytest.fixture(scope="module", params=["sqlite", pytest.param("mysql", marks=pytest.mark.mysql)])
def served(request, tiny_run, synth_template, tmp_path_factory) -> Served:
    """One server per backend for the tests that change nothing another of them reads (one model load,
    one ingest); tests that break or count things on purpose get their own (`own_server`)."""
    folder = tmp_path_factory.mktemp("served")
    shutil.copytree(synth_template, folder / "data")
    name = None
    if request.param == "sqlite":
        url = f"sqlite:///{folder / 'bonedb.sqlite'}"
    else:
        server = make_url(request.getfixturevalue("mysql_server_url"))
        name = f"bonedb_test_{uuid.uuid4().hex[:12]}"
        admin = create_engine(server)
        with admin.begin() as conn:
            conn.execute(text(f"CREATE DATABASE {name} CHARACTER SET utf8mb4"))
        url = server.set(database=name).render_as_string(hide_password=False)
    engine = make_engine(url, create=True)
    try:
        migrate.upgrade(engine)
        _load(engine, folder / "data")
        run_id = _adopt(engine, tiny_run.run)
        with TestClient(create_app(url, cache_dir=folder / "cache")) as client:
            yield Served(client, url, engine, run_id, folder / "cache")
    finally:
        engine.dispose()
        if name is not None:
            with admin.begin() as conn:
                conn.execute(text(f"DROP DATABASE IF EXISTS {name}"))
            admin.dispose()


@pytest.fixture
def own_server(engine, mura, tiny_run, tmp_path) -> Served:
    _load(engine, mura)
    run_id = _adopt(engine, tiny_run.run)
    url = engine.url.render_as_string(hide_password=False)
    cache = tmp_path / "cache"
    with TestClient(create_app(url, cache_dir=cache)) as client:
        yield Served(client, url, engine, run_id, cache)


def _group_id(engine) -> int:
    from boneclf.store.schema import DuplicateGroup

    with engine.connect() as conn:
        return conn.execute(select(DuplicateGroup.id).where(DuplicateGroup.kind == "exact")).scalar_one()


def _study(engine, **where) -> tuple[int, list[int]]:
    with engine.connect() as conn:
        query = select(Study.id).order_by(Study.id)
        for key, value in where.items():
            query = query.where(getattr(Study, key) == value)
        study_id = conn.execute(query.limit(1)).scalar_one()
        images = conn.execute(select(Image.id).where(Image.study_id == study_id).order_by(Image.id)).scalars().all()
    return study_id, list(images)


def test_run_metrics_read_as_words_and_small_tables():
    """A body-part run's validation metrics (they carry an interval and class names) as the run page shows them."""
    from boneclf.web.routes.runs import metric_view

    view = metric_view({"n": 9, "accuracy": 1.0, "accuracy_ci": [1.0, 1.0], "kappa": None,
                        "confusion": [[4, 0], [0, 5]], "class_names": ["hand", "wrist"],
                        "report": {"hand": {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 4},
                                   "macro avg": {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 9}}})
    assert view.figures == [("n", "9"), ("accuracy", "1.000"), ("accuracy 95% CI", "1.000 to 1.000")]
    [matrix, report] = view.tables
    assert (matrix.headers, matrix.rows) == (["truth", "hand", "wrist"], [["hand", "4", "0"], ["wrist", "0", "5"]])
    assert report.rows[1] == ["macro avg", "1.000", "1.000", "1.000", "9"]


# -- the API, on each backend ---------------------------------------------------------------------------
def test_every_page_and_endpoint_answers_and_never_shows_the_database_url(served):
    c = served.client
    study_id, images = _study(served.engine, body_part="humerus", label=1)
    group = _group_id(served.engine)
    answers = {}
    for path in ["/", "/studies", "/studies?part=humerus&label=1", f"/studies/{study_id}", "/splits", "/splits/s",
                 "/splits/s?near=true", "/splits/s?hash=true", "/runs", f"/runs/{served.run_id}", f"/runs/{served.run_id}/studies/{study_id}",
                 "/api/datasets", "/api/stats", "/api/studies", f"/api/studies/{study_id}", "/api/history",
                 "/api/splits", "/api/splits/s", "/api/runs", f"/api/runs/{served.run_id}",
                 f"/api/runs/{served.run_id}/studies/{study_id}", f"/images/{images[0]}",
                 f"/images/{images[0]}/thumbnail", f"/images/{images[0]}/thumbnail?size=256",
                 f"/runs/{served.run_id}/gradcam/{images[0]}.png", "/charts/stats.png", "/docs", "/openapi.json",
                 "/static/style.css", "/static/app.js", "/duplicates", f"/duplicates/{group}", "/api/duplicates",
                 f"/api/duplicates/{group}"]:
        response = c.get(path)
        assert response.status_code == 200, (path, response.text[:300])
        answers[path] = response
    assert answers[f"/images/{images[0]}"].headers["content-type"] == "image/png"
    assert answers[f"/images/{images[0]}/thumbnail"].content.startswith(b"\xff\xd8")  # JPEG
    assert answers[f"/runs/{served.run_id}/gradcam/{images[0]}.png"].content.startswith(b"\x89PNG")
    # The run's validation metrics are a table of named values, not JSON.
    run_page = answers[f"/runs/{served.run_id}"].text
    assert 'id="metrics"' in run_page and "accuracy</td>" in run_page and "{&#34;" not in run_page, run_page[run_page.find("Validation"):][:600]
    # ... in words: intervals "a to b", reports and confusion matrices as tables of their own, no list or key path.
    metrics = run_page[run_page.find("Validation metrics"):run_page.find("Predictions with Grad-CAM")]
    assert "[" not in metrics and "{" not in metrics and "macro avg." not in metrics and "class_names" not in metrics
    assert "Study confusion matrix (rows: truth, columns: prediction)" in metrics and "<td>macro avg</td>" in metrics
    # The data is drawn by `bonedb synth`: the run and study pages say so where the home page does, and
    # their API answers carry it.
    assert "mura-v1.1</td><td>mura, synthetic (drawn by bonedb synth)</td>" in answers["/"].text
    for path in ["/runs", f"/runs/{served.run_id}", f"/runs/{served.run_id}/studies/{study_id}", f"/studies/{study_id}"]:
        assert '<p class="note" id="synthetic">' in answers[path].text and "synthetic (drawn by bonedb synth)" \
            in answers[path].text, path
    assert [r["data"] for r in answers["/api/runs"].json()["comparison"]] == ["synthetic"]
    assert (answers[f"/api/runs/{served.run_id}"].json()["data"], answers[f"/api/runs/{served.run_id}"].json()[
        "dataset"]) == ("synthetic", "mura-v1.1")
    assert answers[f"/api/runs/{served.run_id}/studies/{study_id}"].json()["data"] == "synthetic"
    assert answers[f"/api/studies/{study_id}"].json()["synthetic"] is True
    openapi = answers["/openapi.json"].json()["paths"]
    assert {"/api/studies", "/api/studies/{study_id}/reviews", "/images/{image_id}"} <= set(openapi)
    database = served.engine.url.database  # the SQLite file's path or the MySQL database's name
    for path, response in answers.items():
        if response.headers["content-type"].startswith(("text/", "application/json")):
            assert database not in response.text and "mysql" not in response.text.lower(), path


def test_a_database_error_says_what_kind_and_nothing_of_the_url(own_server):
    study_id, _ = _study(own_server.engine)
    with own_server.engine.begin() as conn:
        conn.execute(text("DROP TABLE reviews"))
    response = own_server.client.get(f"/api/studies/{study_id}")
    assert response.status_code == 500
    assert response.json()["detail"].startswith("database error (")
    assert own_server.engine.url.database not in response.text and "reviews" not in response.text


def test_study_browser_filters_and_pages(served):
    c = served.client
    everything = c.get("/api/studies", params={"per_page": 200}).json()
    with served.engine.connect() as conn:
        assert everything["total"] == conn.execute(select(text("COUNT(*)")).select_from(Study)).scalar_one()
    humerus = c.get("/api/studies", params={"part": "humerus", "label": 1, "per_page": 200}).json()
    assert humerus["total"] > 0 and {(s["part"], s["label"]) for s in humerus["studies"]} == {("humerus", 1)}
    assert all(s["image_ids"] for s in humerus["studies"])
    test = c.get("/api/studies", params={"split": "s", "subset": "test", "per_page": 200}).json()
    assert 0 < test["total"] < everything["total"]
    first, second = (c.get("/api/studies", params={"per_page": 5, "page": n}).json() for n in (1, 2))
    assert first["pages"] == -(-everything["total"] // 5)
    assert not {s["id"] for s in first["studies"]} & {s["id"] for s in second["studies"]}
    page = c.get("/studies", params={"part": "humerus", "label": "1"}).text
    assert f'id="count">{humerus["total"]} stud' in page
    for params, word in [({"part": "femur"}, "femur"), ({"label": 2}, "label"), ({"subset": "test"}, "split"),
                         ({"split": "s", "subset": "holdout"}, "subset")]:
        response = c.get("/api/studies", params=params)
        assert response.status_code == 400 and word in response.json()["detail"], params
    assert c.get("/api/studies", params={"split": "nope"}).status_code == 404
    assert c.get("/api/studies", params={"dataset": "nope"}).status_code == 404


def test_split_audit_hashes_only_when_asked(own_server):
    c = own_server.client
    with own_server.engine.begin() as conn:  # as if ingested without --verify, before anything was hashed
        conn.execute(update(Image).values(content_hash=None, perceptual_hash=None, near_hash=None,
                                          picture_signature=None))
    before = c.get("/api/splits/s").json()
    assert before["audit"] is None and before["unhashed"] > 0, "ingested without --verify: nothing hashed yet"
    assert "Hash them and audit" in c.get("/splits/s").text
    audited = c.get("/api/splits/s", params={"hash": "true"}).json()
    assert audited["unhashed"] == before["unhashed"] and audited["audit"]["images"] > 0
    # Hashes were stored: the next audit needs no hashing.
    after = c.get("/api/splits/s").json()
    assert after["unhashed"] == 0 and after["audit"]["images"] == audited["audit"]["images"]
    assert sum(row["images"] for row in after["summary"]["counts"]) == after["audit"]["images"]


def test_unknown_ids_are_404_json(served):
    c = served.client
    for path in ["/api/studies/999999", "/images/999999", "/images/999999/thumbnail", "/api/runs/999999",
                 "/runs/999999/gradcam/1.png", f"/runs/{served.run_id}/gradcam/999999.png",
                 "/api/runs/999999/studies/1", f"/api/runs/{served.run_id}/studies/999999", "/api/splits/nope",
                 "/api/duplicates/999999", "/api/duplicates?dataset=nope"]:
        response = c.get(path)
        assert response.status_code == 404, path
        assert response.headers["content-type"] == "application/json" and response.json()["detail"], path
    assert c.post("/api/studies/999999/reviews", json={"decision": "label confirmed"}).status_code == 404
    assert c.post("/api/duplicates/999999/reviews", json={"decision": "duplicate confirmed"}).status_code == 404
    page = c.get("/studies/999999", headers={"Accept": "text/html"})
    assert page.status_code == 404 and "no study 999999" in page.text


def test_images_are_served_by_id_from_inside_the_root_only(own_server, mura, tmp_path):
    c = own_server.client
    secret = tmp_path / "secret.png"
    shutil.copy(next(mura.rglob("*.png")), secret)
    for path in ["/images/../../../etc/passwd", "/images/..%2F..%2F..%2Fetc%2Fpasswd", "/images/%2e%2e/secret.png",
                 "/images/1%2F..%2F..%2Fsecret.png", "/static/../../../../etc/passwd", "/static/%2e%2e/app.py",
                 "/images/-1", "/images/1.5"]:
        response = c.get(path)
        assert response.status_code in (404, 422), path
        assert b"root:" not in response.content and b"create_app" not in response.content, path
    # A path in the database that leads outside the dataset's root is refused too (a bad ingest, a symlink).
    study_id, [first, *_] = _study(own_server.engine)
    with own_server.engine.begin() as conn:
        conn.execute(update(Image).where(Image.id == first).values(path=f"../{secret.name}"))
    assert c.get(f"/images/{first}").status_code == 404
    assert "outside" in c.get(f"/images/{first}").json()["detail"]
    link = mura / "link.png"
    link.symlink_to(secret)
    with own_server.engine.begin() as conn:
        conn.execute(update(Image).where(Image.id == first).values(path="link.png"))
    assert c.get(f"/images/{first}").status_code == 404


def test_thumbnails_are_made_once_and_keyed_by_content(own_server, mura):
    c = own_server.client
    _, [first, second, *_] = _study(own_server.engine)
    assert c.get(f"/images/{first}/thumbnail").status_code == 200
    [made] = list((own_server.cache / "thumbnails").rglob("*.jpg"))
    stamp = made.stat().st_mtime_ns
    assert c.get(f"/images/{first}/thumbnail").status_code == 200
    assert made.stat().st_mtime_ns == stamp, "own_server from the cache, not made again"
    # A second image with the same bytes shares the thumbnail.
    with own_server.engine.connect() as conn:
        paths = dict(conn.execute(select(Image.id, Image.path).where(Image.id.in_([first, second]))).all())
    shutil.copy(mura / paths[first], mura / paths[second])
    with own_server.engine.begin() as conn:  # hashes as `ingest --verify` would store them
        conn.execute(update(Image).where(Image.id.in_([first, second])).values(content_hash=made.name.split("-")[0]))
    assert c.get(f"/images/{second}/thumbnail").status_code == 200
    assert len(list((own_server.cache / "thumbnails").rglob("*.jpg"))) == 1
    assert c.get(f"/images/{first}/thumbnail?size=999").status_code == 400


def test_reviews_are_recorded_with_who_and_when_and_never_change_the_label(served):
    c = served.client
    study_id, _ = _study(served.engine, body_part="humerus", label=1)
    refused = c.post(f"/api/studies/{study_id}/reviews", json={"decision": "label disputed"})
    assert refused.status_code == 400 and "note" in refused.json()["detail"]
    assert c.post(f"/api/studies/{study_id}/reviews", json={"decision": "relabel to 0"}).status_code == 400
    assert c.post(f"/api/studies/{study_id}/reviews", json={"decision": "duplicate confirmed"}).status_code == 400
    made = c.post(f"/api/studies/{study_id}/reviews",
                  json={"decision": "label disputed", "note": "no fracture line", "reviewer": "alice"})
    assert made.status_code == 201
    assert made.json()["reviewer"] == "alice" and made.json()["label"] == 1 and made.json()["created_at"]
    form = c.post(f"/studies/{study_id}/reviews", data={"decision": "label confirmed", "reviewer": ""},
                  follow_redirects=False)
    assert form.status_code == 303 and form.headers["location"] == f"/studies/{study_id}#reviews"
    detail = c.get(f"/api/studies/{study_id}").json()
    assert detail["label"] == 1, "a review never changes the label"
    assert [(r["decision"], r["note"]) for r in detail["reviews"]] == [
        ("label disputed", "no fracture line"), ("label confirmed", None)]
    assert detail["reviews"][1]["reviewer"], "the OS user when the form leaves it empty"
    assert [e["by"] for e in detail["history"]][0] == "review by alice"
    # ... and in `bonedb history`.
    history = CliRunner().invoke(cli, ["--database-url", served.url, "history", "--json"])
    assert history.exit_code == 0, history.output
    assert '"reason": "label disputed"' in history.output and '"source": "no fracture line"' in history.output
    study = detail["patient"], detail["part"], str(detail["number"])
    human = CliRunner().invoke(cli, ["--database-url", served.url, "history", "mura-v1.1", f"patient{study[0]}",
                                     study[1], study[2]])
    assert "review by alice" in human.output and "label 1 kept" in human.output
    # A form posted from another site is refused.
    forged = c.post(f"/studies/{study_id}/reviews", data={"decision": "label confirmed"},
                    headers={"Origin": "https://elsewhere.example"})
    assert forged.status_code == 403
    with served.engine.connect() as conn:
        assert conn.execute(select(Study.label).where(Study.id == study_id)).scalar_one() == 1


def test_duplicate_groups_side_by_side_and_their_reviews(served):
    c = served.client
    group = _group_id(served.engine)
    [listed] = [g for g in c.get("/api/duplicates").json() if g["id"] == group]
    assert (listed["id"], listed["kind"], listed["size"]) == (group, "exact", 2)
    detail = c.get(f"/api/duplicates/{group}").json()
    members = [m["image_id"] for m in detail["members"]]
    page = c.get(f"/duplicates/{group}").text
    assert all(f'src="/images/{image_id}"' in page for image_id in members)
    with served.engine.connect() as conn:
        studies = set(conn.execute(select(Image.study_id).where(Image.id.in_(members))).scalars())
    assert all(f'href="/studies/{study_id}"' in page for study_id in studies), "each picture links to its study"
    assert c.post(f"/api/duplicates/{group}/reviews", json={"decision": "label confirmed"}).status_code == 400
    made = c.post(f"/api/duplicates/{group}/reviews", json={"decision": "duplicate rejected", "note": "two views",
                                                             "reviewer": "bob"})
    assert made.status_code == 201 and made.json()["members"] == sorted(members)
    form = c.post(f"/duplicates/{group}/reviews", data={"decision": "duplicate confirmed"}, follow_redirects=False)
    assert form.status_code == 303
    assert [r["decision"] for r in c.get(f"/api/duplicates/{group}").json()["reviews"]] == [
        "duplicate rejected", "duplicate confirmed"]
    # Each member's study shows the decision in its history, and so does `bonedb history`.
    for study_id in studies:
        history = c.get(f"/api/studies/{study_id}").json()["history"]
        assert f"duplicate rejected (group {group})" in [e["reason"] for e in history]
    listing = CliRunner().invoke(cli, ["--database-url", served.url, "history"])
    assert listing.output.count(f"duplicate rejected (group {group})") == len(studies)


def test_run_pages_predict_and_cache_gradcam(served):
    c = served.client
    study_id, images = _study(served.engine, body_part="humerus")
    predictions = c.get(f"/api/runs/{served.run_id}/studies/{study_id}").json()["images"]
    assert [p["image_id"] for p in predictions] == images
    assert all(p["outcome"] in ("normal", "abnormal") and 0 <= p["probability"] <= 1 for p in predictions)
    assert all(c.get(p["gradcam"]).content.startswith(b"\x89PNG") for p in predictions)
    cached = {p: p.stat().st_mtime_ns for p in (served.cache / "gradcam" / f"run{served.run_id}").glob("*")}
    assert len(cached) >= 2, "an overlay and its prediction per picture"
    again = c.get(f"/api/runs/{served.run_id}/studies/{study_id}").json()["images"]
    assert again == predictions
    assert {p: p.stat().st_mtime_ns for p in cached} == cached, "served from the cache, not computed again"
    runs = c.get("/api/runs").json()
    assert [r["run"] for r in runs["comparison"]] == [served.run_id]
    report = c.get(f"/runs/{served.run_id}/report")
    assert report.status_code == 200 and "bonedb report" in report.text


# -- the token, beyond localhost --------------------------------------------------------------------------
def test_a_token_is_needed_on_every_request_when_set(tiny_run, tmp_path):
    with TestClient(create_app(tiny_run.url, token="s3cret", cache_dir=tmp_path)) as c:
        for path in ["/", "/api/studies", "/images/1", "/docs", "/static/style.css"]:
            missing = c.get(path)
            assert missing.status_code == 401 and "token" in missing.json()["detail"], path
            assert c.get(path, headers={"Authorization": "Bearer wrong"}).status_code == 403, path
            assert c.get(path, params={"token": "s3cre"}).status_code == 403, path
        assert c.get("/api/studies", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert c.post("/api/studies/1/reviews", json={"decision": "label confirmed"}).status_code == 401
        # A browser opens one link with ?token=; the cookie then lets its images and forms through.
        first = c.get("/studies", params={"token": "s3cret"})
        assert first.status_code == 200 and "bonedb_token" in first.headers["set-cookie"]
        assert "httponly" in first.headers["set-cookie"].lower()
        assert c.get("/images/1/thumbnail").status_code == 200
        c.cookies.clear()
        assert c.get("/images/1/thumbnail").status_code == 401


def test_a_loopback_server_answers_loopback_host_names_only(tiny_run, tmp_path):
    # A page on evil.example whose name is made to resolve to 127.0.0.1 (DNS rebinding) must not read it.
    with TestClient(create_app(tiny_run.url, cache_dir=tmp_path, hosts=LOOPBACK_NAMES),
                    base_url="http://127.0.0.1:8000") as c:
        assert c.get("/api/datasets").status_code == 200
        assert c.get("/api/datasets", headers={"Host": "localhost:8000"}).status_code == 200
        refused = c.get("/api/datasets", headers={"Host": "evil.example:8000"})
        assert refused.status_code == 403 and "not served here" in refused.json()["detail"]


def test_serve_refuses_other_hosts_without_a_token(tiny_run, monkeypatch):
    monkeypatch.delenv("BONEDB_SERVE_TOKEN", raising=False)
    result = CliRunner().invoke(cli, ["--database-url", tiny_run.url, "serve", "--host", "0.0.0.0"])
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        "error: --host 0.0.0.0 reaches beyond this machine: pass --token TOKEN (or set BONEDB_SERVE_TOKEN) "
        "so that only those who have it get in"]


# -- in a real browser -------------------------------------------------------------------------------------
_missing = missing


@pytest.fixture(scope="module")
def server(tiny_run):
    """uvicorn serving the tiny run's database on a free loopback port, in a thread of this process."""
    app = create_app(tiny_run.url, cache_dir=tiny_run.folder / "cache", hosts=LOOPBACK_NAMES)  # as `bonedb serve`
    with uvicorn_serving(app) as address:
        yield address


def test_a_steward_browses_reviews_and_looks_at_gradcam_in_chromium(server, tiny_run):
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed: pip install playwright")
    if not Path(CHROMIUM).is_file():
        _missing(f"no {CHROMIUM}: apt-get install -y chromium")
    ARTIFACTS.mkdir(exist_ok=True)
    errors = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda message: message.type == "error" and errors.append(message.text))
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.on("response", lambda r: r.status >= 400 and errors.append(f"{r.status} {r.url}"))

            page.goto(f"{server}/", wait_until="load")
            assert "mura-v1.1" in page.locator("#datasets").inner_text()
            page.goto(f"{server}/studies", wait_until="load")
            with page.expect_navigation():
                page.select_option("select[name=part]", "humerus")  # the filters apply when changed
            with page.expect_navigation():
                page.select_option("select[name=label]", "1")
            cards = page.locator("a.study")
            assert cards.count() > 0
            assert {(cards.nth(i).get_attribute("data-part"), cards.nth(i).get_attribute("data-label"))
                    for i in range(cards.count())} == {("humerus", "1")}
            page.wait_for_function(IMAGES_SHOWN)
            page.screenshot(path=str(ARTIFACTS / "serve-studies.png"), full_page=True)

            cards.first.click()
            page.wait_for_load_state("load")
            assert "humerus" in page.locator("h1").inner_text()
            page.check("input[value='label disputed']")
            page.fill("input[name=reviewer]", "playwright")
            page.click("form.review button")  # the note is required once disputed: the browser stops it
            assert page.locator("#history-table").count() == 0
            page.fill("textarea[name=note]", "cortex intact on both views")
            with page.expect_navigation():
                page.click("form.review button")
            history = page.locator("#history-table").inner_text()
            assert "review by playwright" in history and "label disputed" in history
            assert "cortex intact on both views" in history
            assert "1 (abnormal)" in page.locator("#label").inner_text(), "the label is unchanged"
            page.screenshot(path=str(ARTIFACTS / "serve-study.png"), full_page=True)

            page.goto(f"{server}/duplicates", wait_until="load")
            page.locator("#groups a").first.click()
            page.wait_for_load_state("load")
            assert page.locator("#members img").count() == 2
            page.wait_for_function(IMAGES_SHOWN)
            page.screenshot(path=str(ARTIFACTS / "serve-duplicates.png"), full_page=True)

            page.goto(f"{server}/runs", wait_until="load")
            page.click(f"#comparison a[href='/runs/{tiny_run.run.id}']")
            page.wait_for_load_state("load")
            assert page.locator("#report-link").count() == 1
            page.locator("#run-studies a").first.click()
            page.wait_for_load_state("load")
            overlays = page.locator("#gradcams img")
            assert overlays.count() > 0
            page.wait_for_function(IMAGES_SHOWN)
            page.screenshot(path=str(ARTIFACTS / "serve-gradcam.png"), full_page=True)
        finally:
            browser.close()
    assert errors == []


HTML = {"Accept": "text/html"}


# -- hardening: framing, load, page numbers, names, the cache folder, undecodable pictures -------------------
def test_no_page_may_be_framed_and_each_carries_a_content_policy_it_satisfies(served):
    c = served.client
    study_id, images = _study(served.engine)
    for path in ["/", "/studies", f"/studies/{study_id}", "/splits/s", "/runs", "/docs", "/api/datasets",
                 f"/images/{images[0]}/thumbnail", "/no/such/page"]:
        response = c.get(path, headers=HTML)
        assert response.headers["x-frame-options"] == "DENY", path
        policy = response.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in policy and "unsafe-inline" not in policy, path
        assert "script-src 'self'" in policy and "style-src 'self'" in policy, path
    # The pages satisfy it: no inline script, style element or style attribute in any template.
    from boneclf.web.context import PACKAGE

    for template in (PACKAGE / "templates").iterdir():
        text = template.read_text()
        assert "<script>" not in text and "<style" not in text and "style=" not in text, template.name
        assert not re.search(r"\son[a-z]+=", text), f"{template.name}: an inline event handler"
    report = c.get(f"/runs/{served.run_id}/report")
    assert "frame-ancestors 'none'" in report.headers["content-security-policy"]
    assert "script-src" not in report.headers["content-security-policy"], "a report runs no script at all"


def test_another_site_cannot_frame_a_page_in_chromium(server, tiny_run, tmp_path):
    # A page on another port frames a study page (which a click could then review): the browser refuses.
    import http.server

    (tmp_path / "attack.html").write_text(f'<iframe id="victim" src="{server}/studies/1" width="900" '
                                          'height="600"></iframe>')
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as attacker, chromium() as page:
        threading.Thread(target=attacker.serve_forever, daemon=True).start()
        page.goto(f"http://127.0.0.1:{attacker.server_address[1]}/attack.html", wait_until="load")
        page.wait_for_timeout(500)
        [victim] = [f for f in page.frames if f != page.main_frame]
        assert victim.locator("form.review").count() == 0, "the study page loaded inside another site's frame"
        attacker.shutdown()
    # Its own pages, the API documentation and a report load in the browser without a policy violation.
    with chromium() as page:
        for path in ["/", "/studies", "/studies/1", "/splits/s", "/duplicates", "/runs", f"/runs/{tiny_run.run.id}",
                     "/docs", f"/runs/{tiny_run.run.id}/report"]:
            page.goto(f"{server}{path}", wait_until="load")
        assert page.errors == []


def test_a_report_is_made_again_by_post_only_and_cheap_pages_answer_while_it_is_made(tiny_run, tmp_path):
    import httpx

    app = create_app(tiny_run.url, cache_dir=tmp_path / "cache", hosts=LOOPBACK_NAMES)
    run = tiny_run.run.id
    with uvicorn_serving(app) as address, ThreadPoolExecutor(64) as pool:
        # 60 browsers open the report before it exists: one report is made, the others wait for it.
        began = time.monotonic()
        opened = [pool.submit(httpx.get, f"{address}/runs/{run}/report", timeout=600) for _ in range(60)]
        time.sleep(0.5)
        waits, during = [], 0
        while not all(f.done() for f in opened):
            start = time.monotonic()
            response = httpx.get(f"{address}/api/datasets", timeout=600)
            waits.append(time.monotonic() - start)
            during += not all(f.done() for f in opened)
            assert response.status_code == 200
            time.sleep(0.1)
        making = time.monotonic() - began
        assert [f.result().status_code for f in opened] == [200] * 60
        assert during >= 3, f"the report was made too fast ({making:.1f} s) to measure anything"
        # Behind a starved thread pool the first of them would wait for the whole report; here none waits
        # for more than a fraction of it (the report's Python work shares the interpreter's lock).
        assert statistics.median(waits) < 1 and max(waits) < making / 3, (making, waits)
        made = tmp_path / "cache" / "reports" / f"run{run}.html"
        stamp = made.stat().st_mtime_ns
        # A link cannot make it again; a POST (the run page's button) does.
        again = httpx.get(f"{address}/runs/{run}/report", params={"refresh": "true"}, headers=HTML, timeout=60)
        assert again.status_code == 400 and "POST" in again.text and again.headers["content-type"].startswith("text/html")
        assert made.stat().st_mtime_ns == stamp
        remade = httpx.post(f"{address}/runs/{run}/report", timeout=600)
        assert remade.status_code == 303 and remade.headers["location"] == f"/runs/{run}/report"
        assert made.stat().st_mtime_ns > stamp


def test_expensive_work_is_shared_per_job_and_bounded():
    import asyncio

    from boneclf.web.lanes import Busy, Lane

    lane, calls, gate = Lane("test", workers=1, waiting=1), [], threading.Event()

    def work(name):
        calls.append(name)
        gate.wait(10)
        return name

    async def main():
        first = [asyncio.ensure_future(lane.run("a", partial(work, "a"))) for _ in range(5)]
        second = asyncio.ensure_future(lane.run("b", partial(work, "b")))
        await asyncio.sleep(0.1)
        with pytest.raises(Busy):
            await lane.run("c", partial(work, "c"))
        gate.set()
        return await asyncio.gather(*first, second)

    assert asyncio.run(main()) == ["a"] * 5 + ["b"]
    assert calls == ["a", "b"], "five requests for one job ran it once; the third job was refused"
    lane.close()


def test_page_numbers_past_the_last_are_refused_and_a_page_answers_with_a_page(served):
    c = served.client
    huge = "9223372036854775808"
    for path in ["/studies", "/duplicates", "/splits/s"]:
        response = c.get(path, params={"page": huge}, headers=HTML)
        assert response.status_code == 400, (path, response.text[:300])
        assert response.headers["content-type"].startswith("text/html") and "choose a page from 1 to" in response.text
    for path in ["/api/studies", "/api/duplicates"]:
        response = c.get(path, params={"page": huge})
        assert response.status_code == 400 and "choose a page from 1 to" in response.json()["detail"], path
    assert c.get("/api/studies", params={"page": 0}).status_code == 400
    malformed = c.get("/studies", params={"page": "x"}, headers=HTML)
    assert malformed.status_code == 422 and malformed.headers["content-type"].startswith("text/html")
    assert "page" in malformed.text


def test_split_and_dataset_names_with_a_slash_are_reachable(own_server, mura):
    c, engine = own_server.client, own_server.engine
    ingest_mura(engine, mura, dataset="ward/b")
    create_split(engine, "team/s1", SplitOptions("ward/b", BODY_PARTS, test_from="carve", val=0.15, test=0.15,
                                                 seed=1))
    assert 'href="/splits/team/s1"' in c.get("/splits").text
    for path in ["/splits/team/s1", "/splits/team%2Fs1", "/api/splits/team/s1", "/api/splits/team%2Fs1"]:
        response = c.get(path)
        assert response.status_code == 200 and "team/s1" in response.text, path
    assert c.get("/api/splits/team/s1").json()["summary"]["dataset"] == "ward/b"
    page = c.get("/splits/team/s1").text
    assert "/studies?split=team/s1&amp;subset=" in page
    assert c.get("/api/studies", params={"split": "team/s1", "subset": "test"}).json()["total"] > 0
    assert 'href="/studies?dataset=ward/b"' in c.get("/").text
    assert c.get("/studies?dataset=ward/b").status_code == 200
    assert c.get("/api/studies", params={"dataset": "ward/b"}).json()["total"] > 0
    assert c.get("/api/stats", params={"dataset": "ward/b"}).json()["counts"]
    assert c.get("/duplicates", params={"dataset": "ward/b"}).status_code == 200


@pytest.fixture
def read_only_folder(tmp_path):
    """A folder nobody may write to, root included (root ignores permissions; not the immutable flag)."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    immutable = os.access(folder, os.W_OK)
    if immutable and subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        _missing("running as root and `chattr +i` fails here: no folder can be made read-only")
    try:
        yield folder
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        folder.chmod(0o755)


def test_serve_refuses_a_cache_folder_it_cannot_write(tiny_run, read_only_folder, monkeypatch):
    with pytest.raises(BonedbError, match="cannot be written"):
        create_app(tiny_run.url, cache_dir=read_only_folder / "cache")
    monkeypatch.delenv("BONEDB_SERVE_TOKEN", raising=False)
    result = CliRunner().invoke(cli, ["--database-url", tiny_run.url, "serve", "--cache-dir", str(read_only_folder)])
    assert result.exit_code == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"error: cache folder {read_only_folder} cannot be written (") and "--cache-dir" in line


def test_the_cache_defaults_to_the_users_cache_folder_not_the_working_one(tiny_run, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.chdir(tmp_path)
    with TestClient(create_app(tiny_run.url)) as c:
        assert c.get("/images/1/thumbnail").status_code == 200
    [made] = (tmp_path / "xdg" / "bonedb" / "serve").glob("bonedb-*/thumbnails/*/*.jpg")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["xdg"], "nothing left in the working folder"
    with TestClient(create_app(tiny_run.url)) as c:  # the same database finds the same cache
        assert c.get("/images/1/thumbnail").status_code == 200
    assert list((tmp_path / "xdg" / "bonedb" / "serve").glob("bonedb-*/thumbnails/*/*.jpg")) == [made]


def test_a_picture_nobody_can_decode_answers_why_not_a_server_error(own_server, mura):
    c, run = own_server.client, own_server.run_id
    study_id, [first, *_] = _study(own_server.engine)
    with own_server.engine.connect() as conn:
        path = conn.execute(select(Image.path).where(Image.id == first)).scalar_one()
    (mura / path).write_bytes(b"not a picture at all")
    gradcam = c.get(f"/runs/{run}/gradcam/{first}.png")
    assert gradcam.status_code == 422 and f"image {first} has no Grad-CAM under run {run}" in gradcam.json()["detail"]
    page = c.get(f"/runs/{run}/gradcam/{first}.png", headers=HTML)
    assert page.status_code == 422 and page.headers["content-type"].startswith("text/html")
    predictions = c.get(f"/api/runs/{run}/studies/{study_id}").json()["images"]
    assert predictions[0]["error"] and predictions[0]["gradcam"] is None
    assert all(p["gradcam"] for p in predictions[1:])
    assert c.get(f"/runs/{run}/studies/{study_id}").status_code == 200
    thumbnail = c.get(f"/images/{first}/thumbnail")
    assert thumbnail.status_code == 422 and "cannot be decoded" in thumbnail.json()["detail"]


def test_review_forms_preselect_nothing_and_refuse_a_form_without_a_choice(served):
    c = served.client
    study_id, _ = _study(served.engine, body_part="wrist")
    group = _group_id(served.engine)
    for path in [f"/studies/{study_id}", f"/duplicates/{group}"]:
        form = c.get(path).text.split('id="review-form"')[1].split("</form>")[0]
        assert form.count('type="radio"') == 2 and "checked" not in form, path
    before = len(c.get(f"/api/studies/{study_id}").json()["reviews"])
    for path in [f"/studies/{study_id}/reviews", f"/duplicates/{group}/reviews"]:
        refused = c.post(path, data={"note": "", "reviewer": "x"}, headers=HTML, follow_redirects=False)
        assert refused.status_code == 400 and "no decision chosen" in refused.text, path
    assert len(c.get(f"/api/studies/{study_id}").json()["reviews"]) == before


def test_behind_a_reverse_proxy_its_name_is_answered_and_its_forms_accepted(tiny_run, tmp_path):
    from boneclf.web.security import served_hosts

    assert served_hosts("0.0.0.0", ("bonedb.example.org",)) is None, "beyond loopback the token guards it"
    shutil.copy(tiny_run.folder / "bonedb.sqlite", tmp_path / "copy.sqlite")  # reviewed here, not in the shared one
    app = create_app(f"sqlite:///{tmp_path / 'copy.sqlite'}", cache_dir=tmp_path / "cache",
                     hosts=served_hosts("127.0.0.1", ("bonedb.example.org",)))
    with TestClient(app, base_url="https://bonedb.example.org") as c:
        assert c.get("/api/datasets").status_code == 200
        made = c.post("/studies/1/reviews", data={"decision": "label confirmed"}, follow_redirects=False,
                      headers={"Origin": "https://bonedb.example.org"})
        assert made.status_code == 303
        assert c.get("/api/datasets", headers={"Host": "evil.example"}).status_code == 403
        forged = c.post("/studies/1/reviews", data={"decision": "label confirmed"},
                        headers={"Origin": "https://evil.example"})
        assert forged.status_code == 403
