"""Ingests that overlap take turns (issue 9, defect 10), and Ctrl-C during an ingest says what was written
(defect 12). Real processes against real SQLite and MariaDB databases."""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import event, func
from sqlalchemy import select as sql_select

from boneclf.data.ingest import ingest_mura
from boneclf.errors import NOTHING_WRITTEN, Interrupted
from boneclf.store.locks import exclusive
from boneclf.store.schema import Image

from conftest import ctrl_c_as_a_terminal, ingest_outcomes, snapshot


def _bonedb() -> str:
    found = shutil.which("bonedb", path=str(Path(sys.executable).parent))
    assert found, "install the package: no bonedb console script"
    return found


def _start_ingest(url: str, data: Path, cwd: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "BONEDB_DATABASE_URL"}
    return subprocess.Popen([_bonedb(), "--database-url", url, "ingest", str(data)], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=ctrl_c_as_a_terminal)


def _first_error_line(proc: subprocess.Popen, timeout: float = 120) -> str:
    ready, _, _ = select.select([proc.stderr], [], [], timeout)
    assert ready, "the ingest printed nothing while the lock was taken"
    return proc.stderr.readline()


def test_two_ingests_at_once_take_turns(db_url, engine, mura, tmp_path):
    """Two processes ingest the same tree at once: the second waits for the first, then finds nothing to do."""
    with exclusive(engine, "ingest"):  # held, so that both processes certainly meet the lock
        procs = [_start_ingest(db_url, mura, tmp_path) for _ in range(2)]
        for proc in procs:
            assert _first_error_line(proc).startswith("waiting for another ingest into ")
    outputs = [proc.communicate(timeout=600) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], outputs
    said = sorted("added" in out for out, _err in outputs)
    assert said == [False, True], outputs
    assert any("nothing to do" in out for out, _err in outputs)
    assert not any("Duplicate entry" in err or "UNIQUE constraint" in err for _out, err in outputs)
    with engine.connect() as conn:
        images = conn.execute(sql_select(func.count()).select_from(Image)).scalar_one()
    assert images == len(list(mura.rglob("*.png")))


def test_ctrl_c_while_an_ingest_waits_says_nothing_was_written(db_url, engine, mura, tmp_path):
    before = snapshot(engine)
    with exclusive(engine, "ingest"):
        proc = _start_ingest(db_url, mura, tmp_path)
        assert _first_error_line(proc).startswith("waiting for another ingest")
        proc.send_signal(signal.SIGINT)
        _out, errors = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert errors.strip().splitlines()[-1] == f"interrupted: {NOTHING_WRITTEN}"
    assert "Aborted!" not in errors and "Traceback" not in errors
    assert snapshot(engine) == before


def test_ctrl_c_inside_the_ingest_transaction_writes_nothing(engine, mura):
    """Ctrl-C arriving while the rows are being written: the transaction rolls back, and the ingest says so
    (the ingest log keeps one row saying it was interrupted, on purpose)."""
    before = snapshot(engine, log=False)

    def interrupt(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("INSERT INTO IMAGES"):
            raise KeyboardInterrupt

    event.listen(engine, "before_cursor_execute", interrupt)
    try:
        with pytest.raises(Interrupted) as caught:
            ingest_mura(engine, mura)
    finally:
        event.remove(engine, "before_cursor_execute", interrupt)
    assert caught.value.message == NOTHING_WRITTEN
    assert snapshot(engine, log=False) == before
    assert ingest_outcomes(engine) == ["interrupted"]
    assert ingest_mura(engine, mura).images_added > 0  # and the lock was let go

