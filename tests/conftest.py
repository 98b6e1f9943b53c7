"""Fixtures: a real database per test on SQLite and on MySQL/MariaDB, and synthetic MURA trees.

MySQL comes from BONEDB_TEST_MYSQL_URL (a server URL whose user may create databases), else
from testcontainers when a Docker engine is there. Under CI=true a missing MySQL fails the run:
MySQL tests never silently skip in CI.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

# Test the package as installed (`pip install .` in CI, `pip install -e .` for development), never
# the bare folders of the checkout: `python -m pytest` puts the checkout first on sys.path, where
# `boneclf/` lacks the `cli` and `migrations` subpackages that installing maps into it.
_CHECKOUT = Path(__file__).resolve().parents[1]
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _CHECKOUT]

# Two test workers share the machine's cores (addopts: `-n 2`). TensorFlow's, faiss's (OpenMP) and BLAS's own
# thread pools would each add a thread per core on top, and their spinning threads fight the other worker's:
# one thread each is quicker in total (BENCHMARKS.md, "The test suite"). Set before anything loads them, and
# inherited by the `bonedb` processes tests start. A user's own setting stands.
if os.environ.get("PYTEST_XDIST_WORKER"):
    for _threads in ("TF_NUM_INTRAOP_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(_threads, "1")

from sqlalchemy import create_engine, inspect, select, text
from sqlalchemy.engine import make_url

from boneclf.data.ingest import ingest_mura
from boneclf.data.splits import SplitOptions, create_split
from boneclf.data.synth import synth_mura
from boneclf.store import migrate
from boneclf.store.engine import make_engine
from boneclf.store.schema import Base
from boneclf.vocabulary import BODY_PARTS

# The from-scratch CNN with light augmentation: what CPU tests can afford to train.
FAST = dict(arch="cnn", weights="none", augment="flip", tensorboard=False, lr=1e-3)


def _docker_available() -> bool:
    try:
        import docker

        docker.from_env().ping()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def mysql_server_url():
    url = os.environ.get("BONEDB_TEST_MYSQL_URL")
    if url:
        engine = create_engine(url)
        try:
            with engine.connect():
                pass
        except Exception as exc:  # a URL that was given must work, in CI or not
            pytest.fail(f"BONEDB_TEST_MYSQL_URL is set but the server is unreachable: {type(exc).__name__}")
        finally:
            engine.dispose()
        yield url
    elif _docker_available():
        from testcontainers.mysql import MySqlContainer

        with MySqlContainer("mysql:8.0", username="root", password="test", dbname="test") as container:
            yield container.get_connection_url().replace("mysql://", "mysql+pymysql://", 1)
    elif os.environ.get("CI") == "true":
        pytest.fail("CI=true but no MySQL: set BONEDB_TEST_MYSQL_URL (e.g. mysql+pymysql://root@127.0.0.1:3306/test)")
    else:
        pytest.skip("no MySQL server: set BONEDB_TEST_MYSQL_URL or install Docker")


@pytest.fixture(params=["sqlite", pytest.param("mysql", marks=pytest.mark.mysql)])
def db_url(request, tmp_path):
    """An empty database on each backend, dropped afterwards."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'bonedb.sqlite'}"
        return
    yield request.getfixturevalue("db_url_mysql")


@pytest.fixture
def db_url_mysql(mysql_server_url):
    """An empty MySQL database of its own, dropped afterwards."""
    server = make_url(mysql_server_url)
    name = f"bonedb_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE DATABASE {name} CHARACTER SET utf8mb4"))
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {name}"))
        admin.dispose()


@pytest.fixture
def bare_engine(db_url):
    engine = make_engine(db_url, create=True)
    yield engine
    engine.dispose()


@pytest.fixture
def engine(bare_engine):
    """A database migrated to head."""
    migrate.upgrade(bare_engine)
    return bare_engine


@pytest.fixture(scope="session")
def synth_template(tmp_path_factory) -> Path:
    """A small synthetic MURA, drawn once; tests copy it before changing it."""
    out = tmp_path_factory.mktemp("synth") / "data"
    synth_mura(out, patients=40, size=48, seed=7)
    return out


@pytest.fixture
def mura(tmp_path, synth_template) -> Path:
    """A private copy of the synthetic MURA that a test may change."""
    out = tmp_path / "data"
    shutil.copytree(synth_template, out)
    return out


def snapshot(engine, *, log: bool = True) -> dict[str, list[tuple]]:
    """Every row of every bonedb table, sorted: equal snapshots mean an unchanged database.
    log=False leaves out the ingest log, which a refused ingest writes to on purpose."""
    with engine.connect() as conn:
        names = [t for t in Base.metadata.sorted_tables if inspect(conn).has_table(t.name)
                 and (log or t.name != "ingest_log")]
        return {t.name: sorted(tuple(map(str, row)) for row in conn.execute(select(t))) for t in names}


def ingest_outcomes(engine) -> list[str]:
    """The outcome of every logged ingest, oldest first."""
    with engine.connect() as conn:
        return list(conn.execute(text("SELECT outcome FROM ingest_log ORDER BY id")).scalars())


def prepare_synth_split(engine, root: Path, patients: int, size: int, shuffled: bool = False) -> None:
    synth_mura(root, patients=patients, size=size, seed=3)
    if shuffled:
        # Same images, study labels permuted: the labels CSV then disagrees with the folders on purpose.
        for split in ("train", "valid"):
            path = root / "MURA-v1.1" / f"{split}_labeled_studies.csv"
            rows = [line.split(",") for line in path.read_text().splitlines()]
            labels = [label for _, label in rows]
            random.Random(1).shuffle(labels)
            path.write_text("".join(f"{study},{label}\n" for (study, _), label in zip(rows, labels)))
    ingest_mura(engine, root, labels_from="csv" if shuffled else None)
    create_split(engine, "s", SplitOptions("mura-v1.1", BODY_PARTS, test_from="carve", val=0.15, test=0.15, seed=1))


def synth_sqlite(folder: Path, patients: int, size: int, shuffled: bool = False):
    """A migrated SQLite database in FOLDER holding a synthetic MURA (in FOLDER/data) and split "s"."""
    engine = make_engine(f"sqlite:///{folder / 'bonedb.sqlite'}", create=True)
    migrate.upgrade(engine)
    prepare_synth_split(engine, folder / "data", patients, size, shuffled)
    return engine


@pytest.fixture(scope="session")
def learning_db(tmp_path_factory):
    """300 synthetic patients at 64 px in SQLite, split 70/15/15 by patient."""
    folder = tmp_path_factory.mktemp("learning")
    engine = synth_sqlite(folder, 300, 64)
    yield engine, folder
    engine.dispose()


@pytest.fixture
def learning_copy(learning_db, tmp_path):
    """A copy of the learning database (same images and split "s") for a test that records runs of its own:
    the shared one keeps only the trained fixture's runs, which tests of prediction's defaults rely on."""
    import sqlite3

    engine, folder = learning_db
    copy = tmp_path / "learning-copy.sqlite"
    with sqlite3.connect(engine.url.database) as source, sqlite3.connect(copy) as target:
        source.backup(target)
    copied = make_engine(f"sqlite:///{copy}")
    yield copied, folder
    copied.dispose()


@dataclass
class Trained:
    engine: object
    folder: Path
    bodypart_run: int
    fracture_run: int
    fracture_config: object


@pytest.fixture(scope="session")
def trained(learning_db) -> Trained:
    """Stage 1 and a shared stage-2 model trained once on the 64 px synthetic set, for every test that
    needs a model that has really learned (evaluation, prediction, Grad-CAM, reports)."""
    from boneclf.ml.training import TrainConfig, train

    engine, folder = learning_db
    [stage1] = train(engine, TrainConfig(stage="bodypart", split="s", image_size=64, epochs=10, patience=10,
                                         runs_dir=str(folder / "runs"), **FAST), verbose=0)
    # Small batches and no early stop: the break is found after a plateau of 10 to 15 epochs.
    config = TrainConfig(stage="fracture", split="s", shared=True, image_size=64, epochs=30, patience=30,
                         batch_size=16, runs_dir=str(folder / "runs"), **FAST)
    [stage2] = train(engine, config, verbose=0)
    return Trained(engine, folder, stage1.run_id, stage2.run_id, config)


def ctrl_c_as_a_terminal() -> None:
    """Popen preexec_fn: SIGINT back to its default in the child, as a terminal leaves it. A shell that starts
    pytest in the background (`pytest &`) ignores SIGINT, the child would inherit that, and Python installs
    its KeyboardInterrupt handler only when SIGINT is at its default."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


# With pytest-xdist (addopts: `-n 2 --dist loadgroup`): a test file's tests run on one worker, so its
# module-scoped fixtures are built once; and every test that uses the shared trained models joins one
# group, so the session's most expensive fixture is built once, not once per worker. A wrapper, so that
# the groups are marked before xdist's own hook reads them.
_SHARED_MODELS = {"trained", "learning_db"}


@pytest.hookimpl(wrapper=True)
def pytest_collection_modifyitems(items):
    for item in items:
        if item.get_closest_marker("xdist_group"):
            continue  # a test that asked for a group of its own (it takes long, and shares nothing)
        shared = _SHARED_MODELS & set(getattr(item, "fixturenames", ()))
        item.add_marker(pytest.mark.xdist_group("trained" if shared else item.module.__name__))
    return (yield)


def ctrl_c_after_epochs(epochs: int):
    """A Keras callback that presses Ctrl-C at the end of the EPOCHS-th epoch it sees, counted across every run
    it is given to (the runs of a label audit's folds, or of a tune's trials, one after another)."""
    from boneclf.ml.tf_env import keras

    class CtrlC(keras().callbacks.Callback):
        seen = 0

        def on_epoch_end(self, epoch, logs=None):
            CtrlC.seen += 1
            if CtrlC.seen == epochs:
                raise KeyboardInterrupt

    return CtrlC()
