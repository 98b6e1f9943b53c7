"""Opening image files: size, dimensions and a content hash, in parallel threads.

Pillow and hashlib release the GIL while they decode and hash, so threads use every core
without the cost of shipping bytes between processes. Only regular files are read (a FIFO would
block a thread forever), and only images within the pixel limit are decoded (`pixels`).
"""

from __future__ import annotations

import os
import stat
import warnings
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias

from PIL import UnidentifiedImageError

from boneclf.errors import BonedbError

from .hashing import content_hash, near_hash, perceptual_hash
from .names import printable
from .pixels import open_image
from .same_picture import signature as picture_signature

Progress = Callable[[int], None]


@dataclass(frozen=True)
class FileFacts:
    file_size: int
    width: int
    height: int
    content_hash: str
    perceptual_hash: str
    near_hash: str
    file_format: str  # read from the bytes by Pillow (JPEG, PNG, GIF, ...), whatever the file is named
    picture_signature: bytes  # same_picture.signature: keypoints by which candidate copies are found


@dataclass(frozen=True)
class FileRead:
    """A file read and decoded whole."""

    path: str
    facts: FileFacts
    error: None = None
    reason: None = None


@dataclass(frozen=True)
class FileUnread:
    """A file that could not be read or decoded, and why."""

    path: str
    facts: None
    error: str  # "cannot decode ROOT/PATH: why": names the file
    reason: str  # the same without the file: "why"
    verb: str = ""  # what could not be done: "cannot decode", "cannot read", "refused" ("": a missing file)

    @property
    def beside_path(self) -> str:
        """The error for a line that names the file already: "cannot decode: why" (the path said once)."""
        return f"{self.verb}: {self.reason}" if self.verb else self.reason


# Either; callers tell them apart by `check.facts is None` (or `check.error is not None`), which mypy follows.
FileCheck: TypeAlias = FileRead | FileUnread


def read_regular(full: Path) -> bytes:
    """The bytes of FULL, refusing anything but a regular file (a FIFO, a device, a socket) before
    reading: opened without blocking, then checked, so a FIFO named like an image cannot hang a reader."""
    fd = os.open(full, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = "a FIFO" if stat.S_ISFIFO(mode) else "a folder" if stat.S_ISDIR(mode) else "a device or socket"
            raise BonedbError(f"not a regular file ({kind})")
        with os.fdopen(fd, "rb") as handle:
            fd = -1
            return handle.read()
    finally:
        if fd >= 0:
            os.close(fd)


def broken_link(full: Path) -> str | None:
    """Why FULL, which cannot be found, is gone when it is a broken symbolic link (naming where it pointed);
    None when it is no link."""
    if not full.is_symlink():
        return None
    return f"a broken symbolic link (to {printable(os.readlink(full))}, which is gone)"


def outside(root: Path, full: Path) -> str | None:
    """Where FULL really is, when a symbolic link takes it outside ROOT (a resolved folder); else None."""
    real, top = os.path.realpath(full), str(root).rstrip("/")
    return None if real == top or real.startswith(top + "/") else real


def inspect_file(root: Path, relative: str, *, confined: bool = False) -> FileCheck:
    """Read one file fully: a truncated or undecodable image is an error, not a crash. With `confined`
    (ROOT resolved), a file that a symbolic link takes outside ROOT is refused before it is read."""
    full = root / relative

    def failed(verb: str, reason: str) -> FileCheck:
        return FileUnread(relative, None, f"{verb} {full}: {reason}", reason, verb)

    if confined and (real := outside(root, full)) is not None and os.path.exists(real):
        return failed("refused", f"a symbolic link to {real}, outside the dataset folder: copy the file in, "
                      "or pass --follow-symlinks to read it there")
    try:
        data = read_regular(full)
    except FileNotFoundError:
        link = f": {broken}" if (broken := broken_link(full)) else ""
        return FileUnread(relative, None, f"missing file {full}{link}", f"missing file{link}")
    except BonedbError as exc:
        return failed("cannot read", str(exc))
    except OSError as exc:
        return failed("cannot read", exc.strerror or str(exc))
    try:
        with open_image(data) as image:  # its header first: no pixel decoded beyond the limit
            image.load()  # decode every pixel: verify() alone misses truncated data
            width, height = image.size
            picture_hash = perceptual_hash(image)
            near = near_hash(image)
            signature = picture_signature(image)
            file_format = (image.format or "unknown")[:8]
    except UnidentifiedImageError:  # Pillow names its in-memory buffer here, which tells the user nothing
        return failed("cannot decode", "not an image format bonedb reads")
    except BonedbError as exc:  # over the pixel limit, or a header no reader knows
        return failed("cannot decode", str(exc))
    except (OSError, SyntaxError, ValueError) as exc:
        return failed("cannot decode", str(exc))
    facts = FileFacts(len(data), width, height, content_hash(data), picture_hash, near, file_format, signature)
    return FileRead(relative, facts)


def inspect_files(
    root: Path, paths: Iterable[str], progress: Progress | None = None, workers: int | None = None,
    *, confined: bool = False,
) -> list[FileCheck]:
    """inspect_file over many paths, in input order, reporting progress one file at a time.

    Pillow's warnings (a palette with transparency, say) are not the user's to act on, and printed
    they tear the progress bar: they are silenced here. Ctrl-C stops at once: the files not yet
    started are dropped rather than read before the interrupt is raised. `confined`: see inspect_file."""
    workers = workers or min(32, 2 * (os.cpu_count() or 1))
    results = []
    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        # Warning filters are process-wide: set here, in the calling thread, they hold in the workers.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for check in pool.map(lambda p: inspect_file(root, p, confined=confined), paths):
                results.append(check)
                if progress is not None:
                    progress(1)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return results
