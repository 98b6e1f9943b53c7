"""Database URLs and schema commands: every mistake is one line saying what to do; no password leaks,
not even the part after an @ it holds; `db upgrade` creates a missing MySQL database or says how."""

from __future__ import annotations

import uuid

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from boneclf.cli.main import cli
from boneclf.store.engine import mask_url, scrub


def run(args, url=None):
    prefix = ["--database-url", url] if url else []
    return CliRunner().invoke(cli, prefix + list(args), catch_exceptions=False)


def one_error_line(result) -> str:
    assert result.exit_code == 1, result.output
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and "unexpected" not in line and "Traceback" not in result.output
    return line


@pytest.mark.parametrize("url", [
    "mysql+pymysql://u:abc@LEAKEDTAIL@host/db",
    "mysql+pymysql://u:a@b@LEAKEDTAIL@db.example:3306/bonedb?charset=utf8mb4",
    "mysql+pymysql://u:LEAKED:TAIL@host/db",
])
def test_a_password_holding_at_signs_is_masked_whole(url):
    assert "LEAKED" not in mask_url(url) and "TAIL" not in mask_url(url)
    assert mask_url(url).startswith("mysql+pymysql://u:***@")
    assert "LEAKED" not in scrub(f"cannot connect to {url}: refused", url)
    line = one_error_line(run(["stats"], url))
    assert "LEAKED" not in line and "TAIL" not in line
    if url.count("@") > 1:
        assert "write it as %40" in line  # never sent to a server as host "LEAKEDTAIL@host"


@pytest.mark.mysql
@pytest.mark.parametrize(("query", "expected"), [
    ("", "names no database: add one after the port, e.g. "),
    ("/test?charset=latin9", "asks for charset=latin9: bonedb stores file names as utf8mb4"),
    ("/test?ssl_ca=/nonexistent/ca.pem", "ssl_ca /nonexistent/ca.pem: no such file"),
])
def test_mysql_url_mistakes_are_named_before_connecting(mysql_server_url, query, expected):
    server = make_url(mysql_server_url)
    url = f"mysql+pymysql://{server.username}@{server.host}:{server.port}{query}"
    for args in (["stats"], ["db", "upgrade"], ["db", "current"]):
        line = one_error_line(run(args, url))
        assert expected in line, line


def test_an_unknown_schema_revision_is_named_with_the_choices(tmp_path):
    url = f"sqlite:///{tmp_path / 'bonedb.sqlite'}"
    assert run(["db", "upgrade"], url).exit_code == 0
    for args in (["db", "downgrade", "nosuchrev", "--yes"], ["db", "upgrade", "--revision", "nosuchrev"]):
        line = one_error_line(run(args, url))
        assert "no schema revision 'nosuchrev': choose base, head or one of 0001" in line


@pytest.mark.mysql
def test_db_upgrade_creates_a_missing_mysql_database_in_utf8mb4(mysql_server_url):
    server = make_url(mysql_server_url)
    name = f"bonedb_missing_{uuid.uuid4().hex[:10]}"
    url = server.set(database=name).render_as_string(hide_password=False)
    admin = create_engine(server)
    try:
        line = one_error_line(run(["stats"], url))  # only `db upgrade` creates
        assert "Unknown database" in line
        result = run(["db", "upgrade"], url)
        assert result.exit_code == 0, result.output
        # It says that it made the database, not only that it upgraded "(empty)": an administrator reading the
        # output learns that a database now exists on the server (a mistyped name would otherwise pass unseen).
        assert result.stdout.splitlines()[0] == f"created database `{name}` (CHARACTER SET utf8mb4) on {server.host}"
        assert run(["db", "upgrade"], url).stdout.count("created database") == 0, "only when it made one"
        with admin.connect() as conn:
            charset = conn.execute(text("SELECT DEFAULT_CHARACTER_SET_NAME FROM information_schema.SCHEMATA "
                                        "WHERE SCHEMA_NAME = :n"), {"n": name}).scalar_one()
        assert charset == "utf8mb4"
        assert run(["stats"], url).exit_code == 0
    finally:
        with admin.begin() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {name}"))
        admin.dispose()


@pytest.mark.mysql
def test_db_upgrade_without_the_right_to_create_prints_the_statement(mysql_server_url):
    server = make_url(mysql_server_url)
    user, password = f"nc_{uuid.uuid4().hex[:8]}", "pw"
    name = f"bonedb_missing_{uuid.uuid4().hex[:10]}"
    admin = create_engine(server)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE USER '{user}'@'%' IDENTIFIED BY '{password}'"))
        conn.execute(text(f"CREATE USER '{user}'@'localhost' IDENTIFIED BY '{password}'"))
    try:
        url = server.set(username=user, password=password, database=name).render_as_string(hide_password=False)
        line = one_error_line(run(["db", "upgrade"], url))
        assert f"ask an administrator to run CREATE DATABASE IF NOT EXISTS `{name}` CHARACTER SET utf8mb4" in line
        assert password not in line.replace(user, "")
    finally:
        with admin.begin() as conn:
            conn.execute(text(f"DROP USER IF EXISTS '{user}'@'%'"))
            conn.execute(text(f"DROP USER IF EXISTS '{user}'@'localhost'"))
        admin.dispose()
