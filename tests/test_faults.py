"""kill -9 at random points of ingest, split create, export and train, then the invariants: no partial rows,
no stale partial trees once the next run has been, and the next run works.

The points are drawn from a seeded generator (BONEDB_FAULT_SEED, printed with every failure), so a failure
can be replayed. CI runs this (it is marked slow only so that a quick local run may leave it out).
"""

from __future__ import annotations

import csv
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from boneclf.store.schema import Image, IngestLog, Patient, SplitAssignment, SplitVersion, Study, TrainingRun

SEED = int(os.environ.get("BONEDB_FAULT_SEED", random.SystemRandom().randrange(1_000_000)))
pytestmark = pytest.mark.slow


def _bonedb() -> str:
    found = shutil.which("bonedb", path=str(Path(sys.executable).parent))
    assert found, "install the package: no bonedb console script"
    return found


def start(url: str, *args: str, cwd: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "BONEDB_DATABASE_URL"}
    return subprocess.Popen([_bonedb(), "--database-url", url, *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(url: str, *args: str, cwd: Path) -> str:
    proc = start(url, *args, cwd=cwd)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, f"seed {SEED}: bonedb {' '.join(args)} after the kills: {err}"
    return out + err


def kill_at_random(url: str, args: list[str], cwd: Path, rng: random.Random, *, kills: int, within: float,
                   when=None) -> list[bool]:
    """Start ARGS and kill -9 it after a random time below WITHIN seconds (or, with WHEN, a random time below
    WITHIN seconds once `when()` holds), KILLS times; returns, per start, whether the kill landed while it ran
    (and, with WHEN, whether `when()` still held once it was dead: it may finish between check and kill)."""
    landed = []
    for _ in range(kills):
        proc = start(url, *args, cwd=cwd)
        if when is not None:
            deadline = time.monotonic() + 120
            while not when() and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.002)
            time.sleep(rng.uniform(0, within))
        else:
            time.sleep(rng.uniform(0.2, within))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=120)
        landed.append(proc.returncode == -signal.SIGKILL and (when is None or when()))
    return landed


def counts(engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {table.__tablename__: conn.execute(select(func.count()).select_from(table)).scalar_one()
                for table in (Patient, Study, Image, SplitVersion, SplitAssignment, IngestLog)}


def test_kill_9_during_ingest_split_and_export_leaves_nothing_half_done(db_url, engine, mura, tmp_path):
    rng = random.Random(SEED)
    listed = sum(len((mura / "MURA-v1.1" / f"{s}_image_paths.csv").read_bytes().splitlines()) for s in ("train", "valid"))

    # Ingest: all of it or none of it, whenever it dies.
    kill_at_random(db_url, ["ingest", str(mura), "--verify"], tmp_path, rng, kills=3, within=6.0)
    found = counts(engine)
    assert found["images"] in (0, listed), f"seed {SEED}: {found}"
    assert (found["patients"] == 0) == (found["images"] == 0) == (found["studies"] == 0), f"seed {SEED}: {found}"
    finish(db_url, "ingest", str(mura), "--verify", cwd=tmp_path)
    assert counts(engine)["images"] == listed

    # Split create: a split with all its assignments, or no split.
    split = ["split", "create", "s", "--test-from", "carve", "--val", "0.15", "--test", "0.15"]
    kill_at_random(db_url, split, tmp_path, rng, kills=3, within=5.0)
    found = counts(engine)
    assert (found["split_versions"], found["split_assignments"]) in ((0, 0), (1, listed)), f"seed {SEED}: {found}"
    finish(db_url, *split, cwd=tmp_path)
    assert counts(engine)["split_assignments"] == listed

    # Export, killed while its partial tree is being filled: OUT complete or absent, and the next export
    # clears what the killed ones left, and says so.
    exports = tmp_path / "exports"
    exports.mkdir()

    def building() -> bool:
        return any(p.name.startswith(".ex.bonedb-partial-") for p in exports.iterdir())

    out = exports / "ex"
    export = ["export", "s", str(out), "--link", "copy", "--force", "--yes"]
    landed = kill_at_random(db_url, export, tmp_path, rng, kills=3, within=0.1, when=building)
    assert not out.exists() or _complete(out), f"seed {SEED}: a half-written OUT"
    left = [p for p in exports.iterdir() if p.name.startswith(".ex.")]
    # Each export first clears what earlier ones left, so what is left is the last one's, if it died building.
    assert left or not landed[-1], f"seed {SEED}: an export killed while building left nothing to clear"
    said = finish(db_url, *export, cwd=tmp_path)
    assert said.count("note: removed ") + said.count("note: restored ") == len(left), f"seed {SEED}: {said}"
    assert sorted(p.name for p in exports.iterdir()) == ["ex"] and _complete(out), f"seed {SEED}"


def _complete(out: Path) -> bool:
    with open(out / "manifest.csv", newline="") as fh:
        listed = [row["exported_path"] for row in csv.DictReader(fh)]
    return bool(listed) and all((out / path).is_file() for path in listed) and (out / "split.json").is_file()


def test_kill_9_during_train_leaves_the_next_commands_working(tmp_path):
    """A tiny model on SQLite: whenever train dies, `runs list` answers and the next train finishes."""
    from boneclf.data.ingest import ingest_mura
    from boneclf.data.splits import SplitOptions, create_split
    from boneclf.data.synth import synth_mura
    from boneclf.store import migrate
    from boneclf.store.engine import make_engine
    from boneclf.vocabulary import BODY_PARTS

    rng = random.Random(SEED + 1)
    url = f"sqlite:///{tmp_path / 'bonedb.sqlite'}"
    engine = make_engine(url, create=True)
    migrate.upgrade(engine)
    synth_mura(tmp_path / "data", patients=16, parts=("humerus", "shoulder"), size=32, seed=2)
    ingest_mura(engine, tmp_path / "data")
    create_split(engine, "s", SplitOptions("mura-v1.1", BODY_PARTS, test_from="carve", val=0.2, test=0.2, seed=1))
    train = ["train", "--stage", "bodypart", "--split", "s", "--arch", "cnn", "--weights", "none",
             "--image-size", "32", "--epochs", "3", "--no-tensorboard", "--runs-dir", str(tmp_path / "runs")]
    kill_at_random(url, train, tmp_path, rng, kills=1, within=25.0)
    finish(url, "runs", "list", cwd=tmp_path)
    finish(url, *train, cwd=tmp_path)
    with engine.connect() as conn:
        statuses = list(conn.execute(select(TrainingRun.status).order_by(TrainingRun.id)).scalars())
    assert statuses[-1] == "finished", f"seed {SEED}: {statuses}"
    engine.dispose()
