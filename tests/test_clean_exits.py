"""How bonedb ends when it cannot go on: Ctrl-C at any moment (even while it starts), a file system that
says no, an ingest that has to wait for another, a split created three times at once."""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from sqlalchemy import event, func
from sqlalchemy import select as sql_select

from boneclf.cli.main import BonedbGroup
from boneclf.data.ingest import ingest_mura
from boneclf.data.splits import SplitOptions, create_split
from boneclf.store.locks import exclusive
from boneclf.store.schema import SplitVersion
from boneclf.vocabulary import BODY_PARTS

from conftest import ctrl_c_as_a_terminal, ingest_outcomes
from hostile import small_png


def bonedb() -> str:
    found = shutil.which("bonedb", path=str(Path(sys.executable).parent))
    assert found, "install the package: no bonedb console script"
    return found


@pytest.mark.parametrize("delay", [0.05, 0.15, 0.3, 0.5, 0.8])
def test_ctrl_c_while_bonedb_starts_prints_one_line_not_a_traceback(tmp_path, delay):
    env = {**os.environ, "BONEDB_DATABASE_URL": f"sqlite:///{tmp_path / 'bonedb.sqlite'}"}
    proc = subprocess.Popen([bonedb(), "db", "upgrade"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=ctrl_c_as_a_terminal)
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    _out, errors = proc.communicate(timeout=120)
    assert "Traceback" not in errors and "KeyboardInterrupt" not in errors, errors
    assert proc.returncode in (0, 130, -signal.SIGINT), (proc.returncode, errors)
    if proc.returncode == 130:
        assert errors.strip().splitlines()[-1].startswith("interrupted")


def test_a_file_system_refusal_names_the_file_and_what_to_do():
    @click.group(cls=BonedbGroup)
    def group():
        pass

    @group.command()
    @click.argument("errno_name")
    def write(errno_name):
        import errno

        number = getattr(errno, errno_name)
        raise OSError(number, os.strerror(number), "/data/out/image1.png")

    for name, remedy in (("ENOSPC", "free some space"), ("EROFS", "choose a folder you may write to"),
                         ("EIO", "BONEDB_DEBUG=1")):
        result = CliRunner().invoke(group, ["write", name])
        assert result.exit_code == 1
        [line] = result.stderr.strip().splitlines()
        assert line.startswith("error: /data/out/image1.png: ") and remedy in line and "unexpected" not in line


def test_ingest_folder_says_it_waits_for_another_ingest(db_url, engine, tmp_path):
    root = tmp_path / "set"
    for i in range(4):
        small_png(root / ("fractured" if i % 2 else "normal") / f"x{i}.png", shade=50 * i)
    env = {k: v for k, v in os.environ.items() if k != "BONEDB_DATABASE_URL"}
    with exclusive(engine, "ingest"):
        proc = subprocess.Popen([bonedb(), "--database-url", db_url, "ingest-folder", str(root), "--dataset", "set"],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        ready, _, _ = select.select([proc.stderr], [], [], 120)
        assert ready, "ingest-folder printed nothing while it waited"
        assert proc.stderr.readline().startswith("waiting for another ingest into ")
    _out, errors = proc.communicate(timeout=300)
    assert proc.returncode == 0, errors
    assert ingest_outcomes(engine) == ["applied"]


def test_three_split_creates_of_one_name_at_once_make_one_split(engine, mura):
    """Three creators of one split name, each made to look for it before any has stored it (a barrier right
    after that query, where creators without a lock all find nothing): one creates it, the others find it
    made (the documented no-op), and none meets a duplicate key."""
    ingest_mura(engine, mura)
    barrier = threading.Barrier(3, timeout=3)  # with the lock only one can arrive: the others wait on it

    def after(conn, cursor, statement, parameters, context, executemany):
        if "FROM split_versions" in statement and "split_versions.name =" in statement:
            try:
                barrier.wait()
            except threading.BrokenBarrierError:
                pass

    options = SplitOptions("mura-v1.1", BODY_PARTS, test_from="carve", val=0.15, test=0.15, seed=1)
    results, errors = [], []

    def create():
        try:
            results.append(create_split(engine, "race", options))
        except Exception as exc:  # noqa: BLE001 - collected, then asserted absent
            errors.append(exc)

    event.listen(engine, "after_cursor_execute", after)
    try:
        threads = [threading.Thread(target=create) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=300)
    finally:
        event.remove(engine, "after_cursor_execute", after)
    assert errors == [], errors
    assert sorted(r.created for r in results) == [False, False, True]
    assert len({r.content_hash for r in results}) == 1
    with engine.connect() as conn:
        assert conn.execute(sql_select(func.count()).select_from(SplitVersion)).scalar_one() == 1
