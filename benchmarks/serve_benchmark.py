"""`bonedb serve` on a full-size synthetic MURA: study-browser pages and thumbnails.

Builds a MURA-sized manifest (about 40,500 images, 14,900 studies, 12,065 patients; CSVs and
folders, small PNGs only for the images whose thumbnails are timed), ingests it into MySQL and
SQLite, makes a patient-level split, then times pages through the real application in-process
(FastAPI's TestClient: routing, queries, Jinja2 rendering; no network):

  /studies, filtered and deep pages   vs  a naive page: ORM objects for every study, filtered in
                                          Python, then each study's images lazily (N+1 queries)
  48 thumbnails of a page, first time vs  the same from the on-disk cache
  every other page and its /api/ twin (home, a study, splits, a split, duplicates, runs): medians only,
  to compare one version of the server with another on the same settings

    python benchmarks/serve_benchmark.py --server-url mysql+pymysql://root@127.0.0.1:3306/test
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from ingest_benchmark import fresh_database, timed  # noqa: E402

from boneclf.data.ingest import ingest_mura  # noqa: E402
from boneclf.data.splits import SplitOptions, create_split  # noqa: E402
from boneclf.data.synth import synth_mura  # noqa: E402
from boneclf.store import migrate  # noqa: E402
from boneclf.store.engine import make_engine  # noqa: E402
from boneclf.store.schema import Image, Study  # noqa: E402
from boneclf.vocabulary import BODY_PARTS  # noqa: E402

PAGES = [
    ("first page, no filter", "/studies"),
    ("humerus positives", "/studies?part=humerus&label=1"),
    ("split subset + part", "/studies?split=bench&subset=test&part=wrist"),
    ("deep page (last but 10)", "/studies?page={deep}"),
    ("API, humerus positives", "/api/studies?part=humerus&label=1"),
    ("home (datasets, counts)", "/"),
    ("API datasets", "/api/datasets"),
    ("a study", "/studies/{study}"),
    ("API a study", "/api/studies/{study}"),
    ("splits", "/splits"),
    ("a split (unhashed)", "/splits/bench"),
    ("API a split", "/api/splits/bench"),
    ("duplicate groups", "/duplicates"),
    ("runs (none)", "/runs"),
]
REPEATS = 21


def write_radiographs(root: Path, paths: list[str]) -> None:
    """MURA-sized grayscale PNGs (512 x 420, smooth with noise, about 150 kB) for the thumbnails to read."""
    import numpy as np
    from PIL import Image as PILImage

    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:420, 0:512]
    for path in paths:
        picture = 100 + 80 * np.sin(x / rng.uniform(20, 60)) * np.cos(y / rng.uniform(20, 60))
        picture = np.clip(picture + rng.normal(0, 12, picture.shape), 0, 255).astype(np.uint8)
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        PILImage.fromarray(picture).save(target)


def naive_page(engine, part: str, label: int, page: int = 1, per_page: int = 48) -> int:
    """What a first script does: every study as an ORM object, filtered and sliced in Python, then each
    shown study's images by lazy loading (one query per study), patient and dataset likewise."""
    with Session(engine) as session:
        studies = [s for s in session.scalars(select(Study)) if s.body_part == part and s.label == label]
        shown = studies[(page - 1) * per_page: page * per_page]
        return sum(len(s.images) + len(s.patient.patient_key) for s in shown)


def median_ms(client, path: str) -> tuple[float, float]:
    """(first request, median of the next REPEATS) in milliseconds."""
    times = []
    for _ in range(REPEATS + 1):
        start = time.perf_counter()
        response = client.get(path)
        times.append((time.perf_counter() - start) * 1000)
        assert response.status_code == 200, (path, response.text[:200])
    return times[0], statistics.median(times[1:])


def bench_backend(name: str, url: str, engine, root: Path, cache: Path) -> list[str]:
    from fastapi.testclient import TestClient

    from boneclf.web.app import create_app

    ingest_mura(engine, root)
    create_split(engine, "bench", SplitOptions("mura-v1.1", BODY_PARTS, test_from="carve", val=0.1, test=0.1,
                                               seed=42))
    lines = []
    with TestClient(create_app(url, cache_dir=cache)) as client:
        medians = {}
        everything = client.get("/api/studies").json()
        where = {"deep": max(1, everything["pages"] - 10), "study": everything["studies"][0]["id"]}
        for label, path in PAGES:
            path = path.format(**where)
            first, medians[path] = median_ms(client, path)
            lines.append(f"{name:7s} {label:26s} first {first:7.1f} ms   median {medians[path]:7.1f} ms")
        naive_s = statistics.median(timed(lambda: naive_page(engine, "humerus", 1))[0] for _ in range(3))
        ours = medians["/studies?part=humerus&label=1"]
        lines.append(f"{name:7s} {'naive ORM page (baseline)':26s} median {naive_s * 1000:7.1f} ms   "
                     f"{naive_s * 1000 / ours:6.1f}x the humerus-positives page")
        ids = [i for s in client.get("/api/studies").json()["studies"] for i in s["image_ids"]][:48]
        with engine.connect() as conn:
            paths = conn.execute(select(Image.path).where(Image.id.in_(ids))).scalars().all()
        write_radiographs(root, paths)

        def get_all():
            assert all(client.get(f"/images/{i}/thumbnail").status_code == 200 for i in ids)

        cold, _ = timed(get_all)
        warm, _ = timed(get_all)
        lines.append(f"{name:7s} {len(ids)} thumbnails: made {cold * 1000:7.1f} ms, cached {warm * 1000:7.1f} ms "
                     f"({cold / warm:4.1f}x)")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server-url", default=os.environ.get(
        "BONEDB_TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/test"))
    parser.add_argument("--patients", type=int, default=12065)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(dir=os.environ.get("BONEDB_BENCH_TMP")) as tmp:
        root = Path(tmp) / "data"
        synth = synth_mura(root, patients=args.patients, seed=0, write_images=False)
        # Image files only where the benchmark reads them (thumbnails of the first page): the pages
        # themselves never open an image file.
        counts = synth.counts()
        lines = []
        with fresh_database(args.server_url) as engine:
            url = engine.url.render_as_string(hide_password=False)
            lines += bench_backend("mysql", url, engine, root, Path(tmp) / "cache-mysql")
        sqlite_url = f"sqlite:///{Path(tmp) / 'bonedb.sqlite'}"
        engine = make_engine(sqlite_url, create=True)
        migrate.upgrade(engine)
        lines += bench_backend("sqlite", sqlite_url, engine, root, Path(tmp) / "cache-sqlite")
        engine.dispose()

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}; "
          f"python {platform.python_version()}; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"dataset: {counts.images} images, {counts.studies} studies, {counts.patients} patients")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
