"""Thumbnails made once with Pillow and kept on disk, named by the image's content hash and size.

The same picture under two paths (a duplicate) shares one thumbnail; a changed file gets a new
one, since its hash changes. Files are written to a temporary name and renamed, so a concurrent
reader never sees half a thumbnail.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from boneclf.data.hashing import content_hash
from boneclf.data.pixels import open_image
from boneclf.data.verify import read_regular
from boneclf.errors import BonedbError
from boneclf.files import atomic_path

from .errors import CannotShow

SIZES = (128, 256)


_DIGESTS: dict[tuple[str, int, int], str] = {}
_DIGESTS_KEPT = 100_000


def file_hash(path: Path) -> str:
    """The sha256 of the file, remembered per (path, mtime, size) for images ingested without --verify
    (no hash in the database): a cached thumbnail is then found without reading the file again."""
    facts = path.stat()
    key = (str(path), facts.st_mtime_ns, facts.st_size)
    if key not in _DIGESTS:
        if len(_DIGESTS) >= _DIGESTS_KEPT:
            _DIGESTS.clear()
        _DIGESTS[key] = content_hash(read_regular(path))
    return _DIGESTS[key]


def thumbnail(cache_dir: Path, source: Path, size: int, known_hash: str | None = None) -> Path:
    """The cached JPEG thumbnail (longest side SIZE) of SOURCE, made now if it is not there yet.
    `known_hash` is the database's sha256 of the file (ingest --verify); without it the file is hashed."""
    if size not in SIZES:
        raise ValueError(f"thumbnail size {size}: choose from {', '.join(map(str, SIZES))}")
    digest = known_hash or file_hash(source)
    target = cache_dir / "thumbnails" / digest[:2] / f"{digest}-{size}.jpg"
    if target.is_file():
        return target
    try:
        with open_image(read_regular(source)) as picture:  # over the pixel limit: refused before decoding
            small = picture.convert("L")
            small.thumbnail((size, size), Image.Resampling.LANCZOS)
    except (OSError, SyntaxError, ValueError, BonedbError) as exc:  # the file's fault, not a 500
        raise CannotShow(f"{source.name} cannot be decoded for a thumbnail: {exc}") from None
    with atomic_path(target) as temporary:
        small.save(temporary, "JPEG", quality=85)
    return target
