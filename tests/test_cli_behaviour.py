"""The command line's manners outside training: passwords masked, read-only commands that create nothing,
database URL mistakes, closed pipes, confirmations before destruction, counts in words.

Training's (TensorBoard, --resume, per-part checks, Ctrl-C, runs delete) are in test_defaults.py;
the README itself is run by test_docs.py.
"""

from __future__ import annotations

import json
import os
import pty
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image
from sqlalchemy import inspect
from sqlalchemy.engine import make_url

from boneclf.cli.main import cli
from boneclf.data.export import export_split
from boneclf.results import plural
from boneclf.store.engine import scrub
from boneclf.store.queries import get_split

from conftest import synth_sqlite

CHECKOUT = Path(__file__).resolve().parents[1]


def run(args, url=None, **kwargs):
    prefix = ["--database-url", url] if url else []
    return CliRunner().invoke(cli, prefix + list(args), catch_exceptions=False, **kwargs)


def bonedb_executable() -> str:
    """The installed console script next to this Python (what .ci/run's virtual environment holds)."""
    found = shutil.which("bonedb", path=str(Path(sys.executable).parent))
    assert found, f"no bonedb console script beside {sys.executable}: install the package (pip install -e .)"
    return found


def sqlite_url(folder: Path) -> str:
    return f"sqlite:///{folder / 'bonedb.sqlite'}"


@pytest.fixture
def small(tmp_path):
    """A migrated SQLite database in tmp_path with a small synthetic MURA and split "s"."""
    engine = synth_sqlite(tmp_path, 12, 32)
    yield engine, tmp_path
    engine.dispose()


# -- defect 2: only the URL's password field is masked ----------------------------------------------

@pytest.mark.parametrize("password", ["bonedb", "b"])
def test_masking_hides_the_password_field_only(password):
    url = f"mysql+pymysql://bonedb:{password}@db.example:3306/bonedb"
    message = f"cannot connect to {url} as user 'bonedb' (bonedb database)"
    assert scrub(message, url) == ("cannot connect to mysql+pymysql://bonedb:***@db.example:3306/bonedb "
                                   "as user 'bonedb' (bonedb database)")


@pytest.mark.mysql
@pytest.mark.parametrize("password", ["bonedb", "b"])
def test_masking_keeps_the_servers_own_words(mysql_server_url, password):
    server = make_url(mysql_server_url)
    url = server.set(username="bonedb", password=password, database="bonedb").render_as_string(hide_password=False)
    result = run(["stats"], url)
    assert result.exit_code == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"error: database mysql+pymysql://bonedb:***@{server.host}:{server.port}/bonedb")
    # MariaDB's message names the user: "bonedb" stays "bonedb", and a one-letter password hides no letters.
    assert "'bonedb'@" in line and "***onedb" not in line and "using password" in line


# -- defect 8: read-only commands create nothing -----------------------------------------------------

def test_read_only_commands_create_nothing_in_an_empty_folder(tmp_path, monkeypatch):
    # predict checks its files before the database, so it is given a real picture from outside the folder.
    picture = tmp_path.parent / f"{tmp_path.name}-xray.png"
    Image.new("L", (64, 64), 90).save(picture)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BONEDB_DATABASE_URL", raising=False)
    for args in (["stats"], ["runs", "list"], ["predict", str(picture)], ["db", "current"]):
        result = run(args)
        assert result.exit_code == 1, args
        [line] = result.stderr.strip().splitlines()
        assert line.startswith(f"error: no database at {tmp_path / 'bonedb.sqlite'}") and "bonedb db upgrade" in line
        assert os.listdir(tmp_path) == [], f"bonedb {' '.join(args)} left files behind"
    assert run(["db", "upgrade"]).exit_code == 0  # the one command that creates the database
    assert os.listdir(tmp_path) == ["bonedb.sqlite"]


# -- defect 9: URL mistakes say what is wrong and what the URL should look like -------------------------

@pytest.mark.parametrize(("url", "expected"), [
    ("mysql://bonedb:s3cret@127.0.0.1:3306/bonedb",
     "error: database URL mysql://bonedb:***@127.0.0.1:3306/bonedb names no driver, so SQLAlchemy picks MySQLdb, "
     "which is not installed: bonedb ships PyMySQL, so write mysql+pymysql://bonedb:***@127.0.0.1:3306/bonedb"),
    ("mysql+pymysql//bonedb:s3cret@127.0.0.1:3306/bonedb",
     "error: cannot parse database URL 'mysql+pymysql//bonedb:***@127.0.0.1:3306/bonedb' (Could not parse "
     "SQLAlchemy URL from given URL string): write it as mysql+pymysql://user:PASSWORD@host:3306/bonedb or "
     "sqlite:///bonedb.sqlite"),
    ("postgresql://bonedb:s3cret@127.0.0.1/bonedb",
     "error: unsupported database 'postgresql' in postgresql://bonedb:***@127.0.0.1/bonedb: bonedb supports "
     "MySQL/MariaDB (mysql+pymysql://) and SQLite (sqlite:///): write it as "
     "mysql+pymysql://user:PASSWORD@host:3306/bonedb or sqlite:///bonedb.sqlite"),
])
def test_database_url_mistakes(url, expected):
    pytest.importorskip("pymysql")
    if url.startswith("mysql://") and __import__("importlib").util.find_spec("MySQLdb") is not None:
        pytest.skip("MySQLdb is installed here, so mysql:// works")
    result = run(["stats"], url)
    assert result.exit_code == 1
    assert result.stderr.strip() == expected
    assert "s3cret" not in result.output


# -- defect 11: a closed pipe ends bonedb quietly ---------------------------------------------------------

def test_stats_into_head_and_into_a_closed_pipe(small):
    _engine, folder = small
    bonedb = bonedb_executable()
    env = {k: v for k, v in os.environ.items() if k != "BONEDB_DATABASE_URL"}
    piped = subprocess.run(["bash", "-c", f"'{bonedb}' stats | head -1"], cwd=folder, env=env,
                           capture_output=True, text=True, timeout=120)
    assert piped.stdout.split() == ["dataset", "part", "split", "label", "images", "studies", "patients"]
    assert piped.stderr == ""
    # A reader that leaves before bonedb writes anything: the write fails with EPIPE every time.
    proc = subprocess.Popen([bonedb, "stats"], cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    errors = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141, errors
    assert errors == "", "no BrokenPipeError message, no traceback"


# -- defect 7: destructive commands ask on a terminal and need --yes elsewhere ----------------------------

def test_destructive_commands_need_yes_without_a_terminal(small):
    engine, folder = small
    url = sqlite_url(folder)
    out = folder / "ex"
    export_split(engine, "s", out)
    before = sorted(p.name for p in out.rglob("*"))

    refused = run(["export", "s", str(out), "--stage", "bodypart", "--force"], url)
    assert refused.exit_code == 1
    assert "pass --yes to confirm" in refused.stderr and f"replace the previous export at {out}" in refused.stderr
    assert sorted(p.name for p in out.rglob("*")) == before
    assert run(["export", "s", str(out), "--stage", "bodypart", "--force", "--yes"], url).exit_code == 0
    assert json.loads((out / "split.json").read_text())["stage"] == "bodypart"

    refused = run(["split", "delete", "s"], url)
    assert refused.exit_code == 1 and "delete split 's'" in refused.stderr and "pass --yes" in refused.stderr
    with engine.connect() as conn:
        assert get_split(conn, "s") is not None

    refused = run(["db", "downgrade", "base"], url)
    assert refused.exit_code == 1 and "remove every bonedb table" in refused.stderr and "pass --yes" in refused.stderr
    assert "split_versions" in inspect(engine).get_table_names()
    assert run(["db", "downgrade", "base", "--yes"], url).exit_code == 0
    assert "split_versions" not in inspect(engine).get_table_names()


def _on_a_terminal(args: list[str], folder: Path, answer: str) -> tuple[int, str]:
    """Run bonedb with its stdin on a pseudo-terminal, answer its question, return (status, stderr)."""
    controller, terminal = pty.openpty()
    env = {k: v for k, v in os.environ.items() if k != "BONEDB_DATABASE_URL"}
    try:
        os.write(controller, answer.encode() + b"\n")  # typed ahead; the terminal keeps it until read
        proc = subprocess.run([bonedb_executable(), *args], cwd=folder, env=env, stdin=terminal,
                              capture_output=True, text=True, timeout=120)
    finally:
        os.close(terminal)
        os.close(controller)
    return proc.returncode, proc.stderr


def test_destructive_commands_ask_on_a_terminal(small):
    engine, folder = small
    status, errors = _on_a_terminal(["split", "delete", "s"], folder, "n")
    assert status == 1 and "This will delete split 's'" in errors and "Continue? [y/N]" in errors
    with engine.connect() as conn:
        assert get_split(conn, "s") is not None
    status, errors = _on_a_terminal(["split", "delete", "s"], folder, "y")
    assert status == 0, errors
    assert run(["split", "list", "--json"], sqlite_url(folder)).output.strip() == "[]"


def test_force_removes_only_files_the_manifest_lists(small):
    engine, folder = small
    out = folder / "ex"
    export_split(engine, "s", out)
    some = next(p for p in out.rglob("*.png"))
    notes = some.parent / "my-notes.txt"
    notes.write_text("mine")
    result = run(["export", "s", str(out), "--force", "--yes"], sqlite_url(folder))
    assert result.exit_code == 1
    relative = notes.relative_to(out).as_posix()
    assert f"holds 1 file that bonedb's manifest does not list ({relative})" in result.stderr
    assert notes.read_text() == "mine"
    notes.unlink()
    assert run(["export", "s", str(out), "--force", "--yes"], sqlite_url(folder)).exit_code == 0


# -- defect 15: small things ---------------------------------------------------------------------------

def test_counts_read_right_in_the_singular(tmp_path):
    assert [plural(n, "view") for n in (0, 1, 2)] == ["0 views", "1 view", "2 views"]
    assert plural(1, "study", "studies") == "1 study" and plural(3, "study", "studies") == "3 studies"
    run(["synth", str(tmp_path / "two"), "--patients", "2", "--parts", "humerus", "--size", "32"])
    url = sqlite_url(tmp_path)
    run(["db", "upgrade"], url)
    ingested = run(["ingest", str(tmp_path / "two"), "--split", "valid"], url)  # one patient in MURA's valid
    added = next(line for line in ingested.output.splitlines() if " added " in line)
    assert added.endswith(", 1 patient") and "1 patients" not in ingested.output

    tree = tmp_path / "folder-set" / "fractured"
    tree.mkdir(parents=True)
    Image.new("L", (40, 40), 128).save(tree / "a.png")
    (tree / "desktop.ini").write_text("x")
    (tree / ".DS_Store").write_text("x")
    (tree / "notes.txt").write_text("x")
    result = run(["ingest-folder", str(tmp_path / "folder-set"), "--dataset", "flat"], url)
    assert result.exit_code == 0, result.output
    assert "1 image, 1 patient " in result.output
    assert "skipped: 1 non-image file, 2 system files" in result.output


def test_license_and_ignored_demo_output():
    text = (CHECKOUT / "LICENSE").read_text()
    assert text.split()[:4] == ["Apache", "License", "Version", "2.0,"] and "END OF TERMS AND CONDITIONS" in text
    assert 'license = "Apache-2.0"' in (CHECKOUT / "pyproject.toml").read_text()
    ignored = (CHECKOUT / ".gitignore").read_text().split()
    for produced in ("/bonedb-demo/", "/demo-data/", "/runs/", "/report.html", "/exports/", "/heatmaps/"):
        assert produced in ignored, produced


def test_demo_hint_points_at_the_demos_own_database(tmp_path):
    from boneclf.workflows.demo import _try_next

    local = _try_next(tmp_path, None, "s1")
    assert local.startswith(f"cd {tmp_path} && bonedb predict s1   # a study of the demo split's test subset")
    hint = _try_next(tmp_path, "mysql+pymysql://bonedb:s3cret@db:3306/bonedb", "s1")
    assert hint.startswith("bonedb --database-url 'mysql+pymysql://bonedb:***@db:3306/bonedb' predict s1")
    assert "s3cret" not in hint and "cd " not in hint


# -- defect 1: TensorBoard is installed with bonedb ------------------------------------------------------

def test_tensorboard_is_declared():
    """TensorFlow 2.21 no longer brings tensorboard, and TensorBoard logs are on by default. (A shared
    development environment may have it anyway; a fresh `pip install .`, as in .ci/run, has only this.)"""
    from importlib.metadata import requires

    declared = [r.split(";")[0].split(">")[0].split("=")[0].strip() for r in requires("bonedb") if "extra" not in r]
    assert "tensorboard" in declared
