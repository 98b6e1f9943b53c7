"""One writer at a time for work that reads, decides, then writes (ingest): a named lock per database.

MySQL and MariaDB: GET_LOCK, held by a connection of its own. SQLite: flock on the database file
(SQLite's own locks are fcntl locks, which flock does not touch on a local filesystem). A second
process waits for the first to finish, then finds its work done; it never dies on a duplicate key.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, text

from boneclf.errors import BonedbError

from .engine import describe, sqlite_path

WAIT_SECONDS = 3600.0  # an ingest of the full MURA with --verify takes minutes, not hours
_POLL_SECONDS = 1


@contextmanager
def exclusive(engine: Engine, name: str, *, wait: float = WAIT_SECONDS,
              on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold the lock NAME on this database for the block, waiting up to `wait` seconds for another holder;
    `on_wait(message)` is called once when it has to wait."""
    backend = engine.url.get_backend_name()
    waiting = _Waiting(engine, name, on_wait)
    if backend == "mysql":
        with _mysql_lock(engine, name, wait, waiting):
            yield
    elif backend == "sqlite" and sqlite_path(engine.url) is not None:
        with _file_lock(engine, name, wait, waiting):
            yield
    else:  # an in-memory SQLite database has one user
        yield


class _Waiting:
    """Says once that the lock is taken (a second ingest would otherwise look hung)."""

    def __init__(self, engine: Engine, name: str, on_wait):
        self.message = f"waiting for another {name} into {describe(engine)} to finish"
        self.on_wait, self.said = on_wait, False

    def __call__(self) -> None:
        if self.on_wait is not None and not self.said:
            self.on_wait(self.message)
        self.said = True


def _timed_out(engine: Engine, name: str, wait: float) -> BonedbError:
    return BonedbError(f"another {name} into {describe(engine)} has been running for more than {wait:.0f} s: "
                       "try again when it has finished (nothing was written)")


@contextmanager
def _mysql_lock(engine: Engine, name: str, wait: float, waiting: _Waiting) -> Iterator[None]:
    # GET_LOCK names are server-wide: the database name keeps two bonedb databases apart (64 characters at most).
    key = f"bonedb.{name}.{engine.url.database}"[:64]
    deadline = time.monotonic() + wait
    with engine.connect() as conn:
        # Short polls rather than one long wait, so Ctrl-C is answered within a second.
        while conn.execute(text("SELECT GET_LOCK(:key, :poll)"), {"key": key, "poll": _POLL_SECONDS}).scalar() != 1:
            waiting()
            if time.monotonic() > deadline:
                raise _timed_out(engine, name, wait)
        try:
            yield
        finally:
            conn.execute(text("SELECT RELEASE_LOCK(:key)"), {"key": key})


@contextmanager
def _file_lock(engine: Engine, name: str, wait: float, waiting: _Waiting) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # Windows: SQLite's own locking is all there is
        yield
        return
    path = sqlite_path(engine.url)
    if path is None or not path.exists():  # None: in memory (exclusive() does not come here for it)
        yield
        return
    deadline = time.monotonic() + wait
    with open(path, "rb") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                waiting()
                if time.monotonic() > deadline:
                    raise _timed_out(engine, name, wait) from None
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
