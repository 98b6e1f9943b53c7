"""Ingest speed on a full-size synthetic MURA manifest, against a naive per-row ORM baseline.

Writes the CSVs of a MURA-sized dataset (about 40,500 images, 14,800 studies, 12,000
patients; no image files), then, in one process and against one MySQL server, times:

  1. bonedb's ingest into an empty schema,
  2. the same ingest again (a no-op),
  3. a naive ORM baseline: one Session.add + flush per patient, study and image row.

Each runs in its own fresh database on the server. Prints a table and the ratio of the
baseline to bonedb's ingest.

    python benchmarks/ingest_benchmark.py --server-url mysql+pymysql://root@127.0.0.1:3306/test
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from boneclf.data.ingest import ingest_mura  # noqa: E402
from boneclf.data.labels import resolve_labels  # noqa: E402
from boneclf.data.mura_reader import read_manifest  # noqa: E402
from boneclf.data.synth import synth_mura  # noqa: E402
from boneclf.store import migrate  # noqa: E402
from boneclf.store.engine import make_engine  # noqa: E402
from boneclf.store.schema import Dataset, Image, Patient, Study  # noqa: E402


@contextmanager
def fresh_database(server_url: str):
    """A new, migrated database on the server, dropped afterwards."""
    server = make_url(server_url)
    name = f"bonedb_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(server)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE DATABASE {name} CHARACTER SET utf8mb4"))
    engine = make_engine(server.set(database=name).render_as_string(hide_password=False))
    try:
        migrate.upgrade(engine)
        yield engine
    finally:
        engine.dispose()
        with admin.begin() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {name}"))
        admin.dispose()


def naive_ingest(engine, root: Path) -> int:
    """What a first script does: parse, then add and flush one ORM object at a time."""
    manifest = read_manifest(root)
    labels = resolve_labels(manifest).labels
    with Session(engine) as session:
        dataset = Dataset(name="naive", root=str(manifest.root), kind="mura")
        session.add(dataset)
        session.flush()
        patients, studies = {}, {}
        for image in manifest.images:
            key = image.study
            if key.patient not in patients:
                patients[key.patient] = Patient(dataset_id=dataset.id, patient_key=key.patient)
                session.add(patients[key.patient])
                session.flush()
            if key not in studies:
                studies[key] = Study(
                    dataset_id=dataset.id, patient_id=patients[key.patient].id, body_part=key.part,
                    source_split=key.split, study_number=key.number, label=labels[key],
                )
                session.add(studies[key])
                session.flush()
            session.add(Image(dataset_id=dataset.id, study_id=studies[key].id, path=image.path,
                              image_number=image.image_number))
            session.flush()
        session.commit()
    return len(manifest.images)


def timed(action):
    start = time.perf_counter()
    result = action()
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server-url", default=os.environ.get(
        "BONEDB_TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/test"),
        help="a MySQL server URL whose user may create databases")
    parser.add_argument("--patients", type=int, default=12065, help="12,065 patients give about 40,500 images")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        synth = synth_mura(root, patients=args.patients, seed=0, write_images=False).counts()
        with fresh_database(args.server_url) as engine:
            full, report = timed(lambda: ingest_mura(engine, root))
            noop, again = timed(lambda: ingest_mura(engine, root))
            assert report.images_added == synth.images and not again.changed
        with fresh_database(args.server_url) as engine:
            naive, count = timed(lambda: naive_ingest(engine, root))
            assert count == synth.images

    with create_engine(args.server_url).connect() as conn:
        server_version = conn.execute(text("SELECT VERSION()")).scalar()
    results = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "server": server_version,
        "images": synth.images, "studies": synth.studies, "patients": synth.patients,
        "full_ingest_s": round(full, 3),
        "noop_reingest_s": round(noop, 3),
        "naive_orm_s": round(naive, 3),
        "speedup_vs_naive": round(naive / full, 1),
    }
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"machine: {results['machine']}; server {server_version}; python {results['python']}")
    print(f"dataset: {synth.images} images, {synth.studies} studies, {synth.patients} patients (CSV only)")
    print(f"full ingest          {full:8.3f} s")
    print(f"no-op re-ingest      {noop:8.3f} s")
    print(f"naive ORM baseline   {naive:8.3f} s")
    print(f"speed-up over naive  {naive / full:8.1f} x")


if __name__ == "__main__":
    main()
