"""Opening image files: size, dimensions and a content hash, in parallel threads.

Pillow and hashlib release the GIL while they decode and hash, so threads use every core
without the cost of shipping bytes between processes.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from .hashing import content_hash, near_hash, perceptual_hash, rotation_signature

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
    rotation_signature: bytes  # hashing.rotation_signature: finds copies turned by a few degrees


@dataclass(frozen=True)
class FileCheck:
    path: str
    facts: FileFacts | None
    error: str | None


def inspect_file(root: Path, relative: str) -> FileCheck:
    """Read one file fully: a truncated or undecodable image is an error, not a crash."""
    full = root / relative
    try:
        data = full.read_bytes()
    except FileNotFoundError:
        return FileCheck(relative, None, f"missing file {full}")
    except OSError as exc:
        return FileCheck(relative, None, f"cannot read {full}: {exc.strerror}")
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()  # decode every pixel: verify() alone misses truncated data
            width, height = image.size
            picture_hash = perceptual_hash(image)
            near = near_hash(image)
            signature = rotation_signature(image)
            file_format = (image.format or "unknown")[:8]
    except UnidentifiedImageError:  # Pillow names its in-memory buffer here, which tells the user nothing
        return FileCheck(relative, None, f"cannot decode {full}: not an image format bonedb reads")
    except (OSError, SyntaxError, ValueError) as exc:
        return FileCheck(relative, None, f"cannot decode {full}: {exc}")
    facts = FileFacts(len(data), width, height, content_hash(data), picture_hash, near, file_format, signature)
    return FileCheck(relative, facts, None)


def inspect_files(
    root: Path, paths: Iterable[str], progress: Progress | None = None, workers: int | None = None
) -> list[FileCheck]:
    """inspect_file over many paths, in input order, reporting progress one file at a time."""
    workers = workers or min(32, 2 * (os.cpu_count() or 1))
    results = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for check in pool.map(lambda p: inspect_file(root, p), paths):
            results.append(check)
            if progress is not None:
                progress(1)
    return results
