"""Thumbnails made once with Pillow and kept on disk, named by the image's content hash and size.

The same picture under two paths (a duplicate) shares one thumbnail; a changed file gets a new
one, since its hash changes. Files are written to a temporary name and renamed, so a concurrent
reader never sees half a thumbnail.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from PIL import Image

SIZES = (128, 256)


_DIGESTS: dict[tuple[str, int, int], str] = {}
_DIGESTS_KEPT = 100_000


def content_hash(path: Path) -> str:
    """The sha256 of the file, remembered per (path, mtime, size) for images ingested without --verify
    (no hash in the database): a cached thumbnail is then found without reading the file again."""
    facts = path.stat()
    key = (str(path), facts.st_mtime_ns, facts.st_size)
    if key not in _DIGESTS:
        if len(_DIGESTS) >= _DIGESTS_KEPT:
            _DIGESTS.clear()
        _DIGESTS[key] = hashlib.sha256(path.read_bytes()).hexdigest()
    return _DIGESTS[key]


def thumbnail(cache_dir: Path, source: Path, size: int, known_hash: str | None = None) -> Path:
    """The cached JPEG thumbnail (longest side SIZE) of SOURCE, made now if it is not there yet.
    `known_hash` is the database's sha256 of the file (ingest --verify); without it the file is hashed."""
    if size not in SIZES:
        raise ValueError(f"thumbnail size {size}: choose from {', '.join(map(str, SIZES))}")
    digest = known_hash or content_hash(source)
    target = cache_dir / "thumbnails" / digest[:2] / f"{digest}-{size}.jpg"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with Image.open(source) as picture:
        small = picture.convert("L")
        small.thumbnail((size, size), Image.Resampling.LANCZOS)
    handle, temporary = tempfile.mkstemp(dir=target.parent, suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as fh:
            small.save(fh, "JPEG", quality=85)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return target
