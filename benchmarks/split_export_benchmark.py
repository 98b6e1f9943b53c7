"""Split creation, hard-link export and duplicate audit on a full-size synthetic MURA.

Builds a MURA-sized manifest (about 40,500 images, 12,065 patients) with a small, unique PNG
file per image (the sizes do not matter for these steps, the file count does), ingests it with
--verify so that hashes exist, then times each step against a baseline run in the same process:

  split create           vs  a naive script: ORM objects, one INSERT + flush per assignment
  export --link hardlink vs  copying every file (shutil.copy2), as notebook exports do
  audit (exact dups)     vs  one SELECT per image looking for its content hash elsewhere

    python benchmarks/split_export_benchmark.py --server-url mysql+pymysql://root@127.0.0.1:3306/test
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image as PILImage
from sqlalchemy import select, text
from sqlalchemy.orm import Session

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from ingest_benchmark import fresh_database, timed  # noqa: E402

from boneclf.data.audit import audit_split  # noqa: E402
from boneclf.data.export import export_split  # noqa: E402
from boneclf.data.ingest import ingest_mura  # noqa: E402
from boneclf.data.splits import SplitOptions, create_split  # noqa: E402
from boneclf.data.synth import synth_mura  # noqa: E402
from boneclf.store.schema import Image, Patient, SplitAssignment, SplitVersion, Study  # noqa: E402
from boneclf.vocabulary import BODY_PARTS  # noqa: E402


def write_small_pngs(root: Path, paths: list[str], seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for path in paths:
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        PILImage.fromarray(rng.integers(0, 256, (24, 16), dtype=np.uint8)).save(target)


def naive_split(engine, dataset_id: int) -> int:
    """Query ORM objects, shuffle patients, add one assignment object at a time."""
    with Session(engine) as session:
        images = session.execute(
            select(Image, Patient.patient_key, Study.label).join(Study, Study.id == Image.study_id)
            .join(Patient, Patient.id == Study.patient_id).where(Image.dataset_id == dataset_id)
        ).all()
        patients = sorted({key for _, key, _ in images})
        random.Random(42).shuffle(patients)
        cut = int(len(patients) * 0.8), int(len(patients) * 0.9)
        subset = {p: "train" if i < cut[0] else "val" if i < cut[1] else "test" for i, p in enumerate(patients)}
        version = SplitVersion(name="naive", dataset_id=dataset_id, kind="bonedb", parameters={}, seed=42,
                               content_hash="-", images=len(images))
        session.add(version)
        session.flush()
        for image, key, label in images:
            session.add(SplitAssignment(split_id=version.id, image_id=image.id, subset=subset[key], label=label))
            session.flush()
        session.commit()
    return len(images)


def naive_duplicate_audit(engine, split_name: str) -> int:
    """For each image, ask the database for another image with the same hash in another subset."""
    found = 0
    with engine.connect() as conn:
        split_id = conn.execute(select(SplitVersion.id).where(SplitVersion.name == split_name)).scalar_one()
        rows = conn.execute(
            select(Image.id, Image.content_hash, SplitAssignment.subset)
            .join(SplitAssignment, SplitAssignment.image_id == Image.id)
            .where(SplitAssignment.split_id == split_id)
        ).all()
        for image_id, digest, subset in rows:
            found += conn.execute(
                select(Image.id).join(SplitAssignment, SplitAssignment.image_id == Image.id)
                .where(SplitAssignment.split_id == split_id, Image.content_hash == digest,
                       SplitAssignment.subset != subset, Image.id != image_id).limit(1)
            ).first() is not None
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server-url", default=os.environ.get(
        "BONEDB_TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/test"))
    parser.add_argument("--patients", type=int, default=12065)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(dir=os.environ.get("BONEDB_BENCH_TMP")) as tmp:
        root = Path(tmp) / "data"
        synth = synth_mura(root, patients=args.patients, seed=0, write_images=False)
        write_small_pngs(root, [i.path for i in synth.images])
        counts = synth.counts()
        with fresh_database(args.server_url) as engine:
            verify_s, _ = timed(lambda: ingest_mura(engine, root, verify=True))
            options = SplitOptions("mura-v1.1", BODY_PARTS, test_from="carve", val=0.1, test=0.1, seed=42)
            split_s, result = timed(lambda: create_split(engine, "bench", options))
            dataset_id = engine.connect().execute(text("SELECT id FROM datasets")).scalar()
            naive_split_s, _ = timed(lambda: naive_split(engine, dataset_id))

            out = Path(tmp) / "exports"
            out.mkdir()
            export_s, report = timed(lambda: export_split(engine, "bench", out / "linked", link="hardlink"))
            assert report.copied_instead_of_linked == 0

            def copy_all():
                for path in sorted(root.rglob("*.png")):
                    target = out / "copied" / path.relative_to(root)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(path, target)

            copy_s, _ = timed(copy_all)
            audit_s, audit = timed(lambda: audit_split(engine, "bench", near=False))
            near_s, near = timed(lambda: audit_split(engine, "bench", near=True))
            naive_audit_s, naive_found = timed(lambda: naive_duplicate_audit(engine, "bench"))
            assert not audit.exact_duplicates and naive_found == 0

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}; "
          f"python {platform.python_version()}")
    print(f"dataset: {counts.images} images, {counts.studies} studies, {counts.patients} patients; "
          f"ingest --verify {verify_s:.1f} s")
    rows = [
        ("split create", split_s, "naive ORM split", naive_split_s),
        ("export --link hardlink", export_s, "copy every file", copy_s),
        ("audit, exact duplicates", audit_s, "one SELECT per image", naive_audit_s),
    ]
    for name, ours, baseline_name, baseline in rows:
        print(f"{name:26s} {ours:7.2f} s   {baseline_name:22s} {baseline:7.2f} s   {baseline / ours:6.1f}x")
    print(f"{'audit, with near-dups':26s} {near_s:7.2f} s   ({len(near.near_duplicates)} near-duplicate pairs)")


if __name__ == "__main__":
    main()
