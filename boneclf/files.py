"""Files: written so that a reader never sees half of one (a temporary name beside it, then a rename), and
named so that every file system takes the name."""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


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
