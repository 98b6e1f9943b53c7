"""Files and folder trees written so that a reader never sees half of one (a temporary name beside it,
then a rename), and named so that every file system takes the name."""

from __future__ import annotations

import errno
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from boneclf.errors import NotWritten

try:
    import fcntl
except ImportError:  # Windows: a process's liveness is judged by its id alone
    fcntl = None  # type: ignore[assignment]


@contextmanager
def atomic_path(target: Path, suffix: str = ".tmp") -> Iterator[Path]:
    """A temporary path beside TARGET to write to; renamed over TARGET when the block ends cleanly.

    On any error (or Ctrl-C) the temporary file is removed and TARGET is left as it was. The file
    gets ordinary permissions (mkstemp's are private). SUFFIX ends the temporary name, for writers
    that insist on one (Keras saves only to names ending .keras).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=suffix)
    os.close(handle)
    temporary = Path(name)
    try:
        yield temporary
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def atomic_write(target: Path, data: bytes | str) -> Path:
    """Write DATA (text as UTF-8) to TARGET atomically; returns TARGET."""
    with atomic_path(target) as temporary:
        if isinstance(data, str):
            temporary.write_text(data, encoding="utf-8")
        else:
            temporary.write_bytes(data)
    return Path(target)


def safe_name(text: str) -> str:
    """TEXT as part of a file name any file system takes: letters, digits, dot, dash and underscore kept,
    every other character (slashes, spaces, accents) an underscore."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", text)


PARTIAL = "bonedb-partial"  # .OUT.bonedb-partial-PID: a tree being built
SET_ASIDE = "bonedb-old"  # .OUT.bonedb-old-PID: the previous tree, moved aside while the new one takes its place


class AtomicTree:
    """`with AtomicTree(out) as partial:` builds in a hidden sibling of OUT, renamed onto OUT when the
    block ends without error; otherwise the partial tree is removed and OUT is left as it was.

    The building process holds a lock on its partial tree. Entering first clears what interrupted
    builds of OUT left beside it (`stale_removed` lists them): trees whose process is gone (its id no
    longer runs and its lock is free) are removed, and a previous tree set aside by a swap cut short
    is put back when OUT is missing. A full disk or an unwritable folder is a one-line error naming OUT.
    """

    def __init__(self, out: Path):
        self.out = Path(out)
        self.partial = self.out.parent / f".{self.out.name}.{PARTIAL}-{os.getpid()}"
        self.replaced = False  # whether a previous tree was at OUT
        self.stale_removed: list[str] = []
        self._lock: int | None = None

    def __enter__(self) -> Path:
        self.stale_removed = clear_stale_trees(self.out)
        if self.partial.exists():
            shutil.rmtree(self.partial)
        try:
            self.partial.mkdir(parents=True)
        except OSError as exc:
            raise _unwritable(self.out, exc) from None
        self._lock = _hold(self.partial)
        return self.partial

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self.replaced = _swap_into_place(self.partial, self.out)
        except OSError as error:
            raise _unwritable(self.out, error) from None
        finally:
            if self.partial.exists():
                shutil.rmtree(self.partial, ignore_errors=True)
            if self._lock is not None:
                os.close(self._lock)
                self._lock = None
        if isinstance(exc, OSError) and exc.errno in _DISK_ERRORS:
            raise _unwritable(self.out, exc) from None


_DISK_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG}  # the target cannot take the tree


def _unwritable(out: Path, exc: OSError) -> NotWritten:
    return NotWritten(f"{out}: {exc.strerror or exc} (writing {exc.filename or out}); nothing was written and no "
                      "partial tree is left: free some space or choose a folder you may write to", exc.errno)


def _hold(tree: Path) -> int | None:
    """An exclusive lock on TREE for as long as this process lives (or until closed); None where unsupported."""
    if fcntl is None:
        return None
    try:
        fd = os.open(tree, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def _owner_gone(tree: Path, pid: int) -> bool:
    """Whether the process that made TREE is gone: its id runs no process here, and no one holds TREE's lock
    (an id reused by another program, or a builder on another machine sharing the folder, keeps it)."""
    try:
        os.kill(pid, 0)
        return False
    except ProcessLookupError:
        pass
    except PermissionError:  # another user's live process
        return False
    fd = _hold(tree)
    if fd is None and fcntl is not None and tree.is_dir():
        return False  # locked: alive after all
    if fd is not None:
        os.close(fd)
    return True


def clear_stale_trees(out: Path) -> list[str]:
    """Remove the partial and set-aside trees that interrupted builds of OUT left beside it (see AtomicTree);
    returns what was done, one line each."""
    done: list[str] = []
    if not out.parent.is_dir():
        return done
    prefix = f".{out.name}."
    for candidate in sorted(out.parent.iterdir()):
        name = candidate.name
        if not name.startswith(prefix):
            continue
        kind, _, pid = name[len(prefix):].rpartition("-")
        if kind not in (PARTIAL, SET_ASIDE) or not pid.isdigit() or int(pid) == os.getpid():
            continue
        if not _owner_gone(candidate, int(pid)):
            continue
        if kind == SET_ASIDE and not out.exists():
            candidate.rename(out)  # a swap cut between its two renames: the previous tree goes back
            done.append(f"restored {out} from {name}, set aside by an interrupted run (process {pid})")
        else:
            shutil.rmtree(candidate, ignore_errors=True)
            done.append(f"removed {candidate}, left by an interrupted run (process {pid})")
    return done


def _swap_into_place(partial: Path, out: Path) -> bool:
    """Rename the finished tree onto OUT; a previous tree is moved aside first, then removed."""
    previous = None
    if out.exists():
        if any(out.iterdir()):
            previous = out.parent / f".{out.name}.{SET_ASIDE}-{os.getpid()}"
            out.rename(previous)
        else:
            out.rmdir()
    try:
        partial.rename(out)
    except OSError:
        if previous is not None:
            previous.rename(out)  # put the old tree back
        raise
    if previous is not None:
        shutil.rmtree(previous, ignore_errors=True)
    return previous is not None
