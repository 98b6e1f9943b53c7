"""Where the database is, how to connect to it, and how to talk about it without leaking passwords."""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError

from boneclf.errors import BonedbError
from boneclf.results import json_dumps

ENV_VAR = "BONEDB_DATABASE_URL"
DEFAULT_SQLITE_FILE = "bonedb.sqlite"
URL_EXAMPLES = "mysql+pymysql://user:PASSWORD@host:3306/bonedb or sqlite:///bonedb.sqlite"

# scheme://user:password@ : the password is everything between the user's colon and the last @
# before the host, so a password holding '@' or ':' is still masked whole.
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][\w+.-]*://[^:/@\s]*:)(?P<password>[^\s]*)@(?=[^@\s]*(?:/|$|\s))")

_LOOSE_PASSWORD = re.compile(r"(?P<head>[\w.+-]*:)(?P<password>[^\s@]*)@")


def resolve_url(url: str | None = None, cwd: Path | None = None) -> str:
    """The URL to use: the explicit one, else $BONEDB_DATABASE_URL, else a SQLite file in cwd."""
    if url:
        return url
    if os.environ.get(ENV_VAR):
        return os.environ[ENV_VAR]
    path = (cwd or Path.cwd()) / DEFAULT_SQLITE_FILE
    return f"sqlite:///{path}"


def mask_url(url: str) -> str:
    """The URL with its password replaced by ***, safe to print or log, even when it does not parse.

    The password is everything between the user's colon and the LAST @ before the host: SQLAlchemy
    stops at the first @, so an unescaped @ in a password would leave its tail in the host."""
    masked = _URL_PASSWORD.sub(lambda m: m["head"] + "***@", url, count=1)
    if masked != url:
        return masked
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        # Not a URL SQLAlchemy can read (a typo in the scheme, say): mask whatever sits in user:PASSWORD@.
        return _LOOSE_PASSWORD.sub(lambda m: m["head"] + "***@", url, count=1)


def scrub(text: str, url: str) -> str:
    """Mask the URL's password wherever the URL itself appears in `text` (driver errors echo it).

    Only the password *field* of a URL is masked: replacing every occurrence of the password
    string would turn each "bonedb" of a message into *** when the password is "bonedb", and a
    one-letter password would reveal itself by the letters it hides.
    """
    try:
        parsed = make_url(url)
        full = parsed.render_as_string(hide_password=False)
        text = text.replace(full, parsed.render_as_string(hide_password=True))
    except (ArgumentError, ValueError):
        pass
    # "PASSWORD" is the placeholder of bonedb's own examples (URL_EXAMPLES), not a secret.
    return _URL_PASSWORD.sub(lambda m: m[0] if m["password"] == "PASSWORD" else m["head"] + "***@", text)


def parse_url(url: str) -> URL:
    """The parsed URL, or a one-line error saying what is wrong and what it should look like."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as exc:
        raise BonedbError(f"cannot parse database URL {mask_url(url)!r} ({exc}): write it as {URL_EXAMPLES}") from None
    if "@" in (parsed.host or ""):
        # user:p@ss@host parses as password "p", host "ss@host": the connection would fail, and its
        # error would print the password's tail as a host name.
        raise BonedbError(f"database URL {mask_url(url)} has an @ in its password: write it as %40 "
                          "(URL-encode the password's @, : and / characters)")
    return parsed


def sqlite_path(parsed: URL) -> Path | None:
    """The file of a file-backed SQLite URL; None for in-memory databases and other backends."""
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def make_engine(url: str, *, create: bool = False) -> Engine:
    """An engine for `url`, with SQLite set up to enforce foreign keys like MySQL does.

    A SQLite file is created only with `create` (by `bonedb db upgrade` and the demo): a
    read-only command pointed at the wrong folder says so instead of leaving an empty file there.
    """
    parsed = parse_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        path = sqlite_path(parsed)
        if path is not None and not create and not path.exists():
            raise BonedbError(f"no database at {path}: run `bonedb db upgrade` here first, or pass --database-url "
                              f"(or set {ENV_VAR}) to use another database")
        engine = create_engine(parsed, json_serializer=json_dumps)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    if backend == "mysql":
        _check_mysql_driver(parsed)
        _check_mysql_url(parsed, mask_url(url))
        # utf8mb4 so that any path a dataset holds round-trips; pool_pre_ping survives server restarts.
        query = dict(parsed.query)
        query.setdefault("charset", "utf8mb4")
        return create_engine(parsed.set(query=query), pool_pre_ping=True, json_serializer=json_dumps)
    raise BonedbError(
        f"unsupported database {backend!r} in {mask_url(url)}: bonedb supports MySQL/MariaDB "
        f"(mysql+pymysql://) and SQLite (sqlite:///): write it as {URL_EXAMPLES}"
    )


# The URL options PyMySQL reads as files: a missing one fails at connect time without its name.
_SSL_FILES = ("ssl_ca", "ssl_cert", "ssl_key", "ssl_capath")


def _check_mysql_url(parsed: URL, shown: str) -> None:
    """What the driver would trip over later with a message naming nothing: no database, another
    character set, a TLS file that is not there. SHOWN is the URL as the user wrote it, masked."""
    if not parsed.database:
        raise BonedbError(f"database URL {shown} names no database: add one after the port, e.g. "
                          f"{parsed.set(database='bonedb').render_as_string(hide_password=True)}")
    charset = parsed.query.get("charset")
    if charset is not None and charset != "utf8mb4":
        raise BonedbError(f"database URL {shown} asks for charset={charset}: bonedb stores file names as utf8mb4 "
                          "(any name a file system holds); remove the charset option")
    for option in _SSL_FILES:
        value = parsed.query.get(option)
        path = Path(value[0] if isinstance(value, tuple) else value).expanduser() if value else None
        if path is not None and not path.exists():
            raise BonedbError(f"database URL {shown}: {option} {path}: no such file; give the path of the "
                              "server's certificate files")


def _check_mysql_driver(parsed: URL) -> None:
    driver = parsed.get_driver_name()
    module = {"mysqldb": "MySQLdb", "pymysql": "pymysql", "mysqlconnector": "mysql.connector"}.get(driver)
    if module is not None and importlib.util.find_spec(module.split(".")[0]) is None:
        fixed = parsed.set(drivername="mysql+pymysql").render_as_string(hide_password=True)
        named = "names no driver, so SQLAlchemy picks MySQLdb" if parsed.drivername == "mysql" else f"asks for {driver}"
        raise BonedbError(f"database URL {parsed.render_as_string(hide_password=True)} {named}, which is not "
                          f"installed: bonedb ships PyMySQL, so write {fixed}")


def describe(engine: Engine) -> str:
    """The engine's URL with the password masked."""
    return engine.url.render_as_string(hide_password=True)


def create_database(engine: Engine) -> bool:
    """Create the URL's MySQL database (utf8mb4) when the server lacks it; True when it was created.

    When the user may not create databases, the error gives the statement an administrator runs."""
    if engine.url.get_backend_name() != "mysql":
        return False
    name = engine.url.database
    server = create_engine(engine.url._replace(database=None), json_serializer=json_dumps)  # set() keeps a None
    statement = f"CREATE DATABASE IF NOT EXISTS `{name}` CHARACTER SET utf8mb4"
    try:
        with server.connect() as conn:
            if conn.exec_driver_sql("SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s",
                                    (name,)).first() is not None:
                return False
            try:
                conn.exec_driver_sql(statement.replace("%", "%%"))
            except DBAPIError as exc:
                code = exc.orig.args[0] if exc.orig is not None and exc.orig.args else None
                if code in (1044, 1045, 1227):  # access denied
                    user = engine.url.username or "bonedb"
                    raise BonedbError(
                        f"user {user!r} may neither use nor create database {name!r} on {engine.url.host}: ask an "
                        f"administrator to run {statement}; GRANT ALL ON `{name}`.* TO '{user}'@'%'; then run "
                        "`bonedb db upgrade` again") from None
                raise
            return True
    finally:
        server.dispose()


def unknown_database(exc: BaseException) -> bool:
    """Whether EXC is MySQL's unknown database (1049), or access denied to a database (1044: what a user
    without rights to it is told, whether or not it exists)."""
    orig = getattr(exc, "orig", None)
    return orig is not None and bool(orig.args) and orig.args[0] in (1044, 1049)
