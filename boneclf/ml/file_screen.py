"""Files kept from TensorFlow's decoder, and why a file was left out.

TensorFlow decodes whatever a file's header claims (a 194 KB PNG of 20,000 x 10,000 pixels took 14 GB) and
blocks forever on a FIFO named like an image. Every path that training, evaluation and export's decoding
hand to it is screened first, in Python, from the file's own bytes: a regular file, within the pixel limit
(`BONEDB_MAX_PIXELS`), of a format whose size can be read. Missing and damaged files need no screen:
TensorFlow fails on them quickly and the pipeline drops them (ignore_errors).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from boneclf.data.verify import read_regular
from boneclf.errors import BonedbError

from .image_spec import screen, why_unreadable


def refusal(path: str) -> str | None:
    """Why PATH must not reach TensorFlow's decoder; None when it may (missing files included: see above)."""
    try:
        screen(read_regular(Path(path)))
    except BonedbError as exc:
        return str(exc)
    except OSError:
        return None
    return None


def refused(paths: list[str]) -> set[int]:
    """Indices of PATHS that must not reach TensorFlow's decoder, read in parallel (file reads release the GIL)."""
    with ThreadPoolExecutor(8) as pool:
        return {i for i, why in enumerate(pool.map(refusal, paths)) if why is not None}


def skip_reason(path: str) -> str:
    """Why the image at PATH was left out, in a few words, for the line that names it."""
    full = Path(path)
    try:
        data = read_regular(full)
    except FileNotFoundError:
        return "a broken symbolic link" if full.is_symlink() else "missing file"
    except BonedbError as exc:
        return str(exc)
    except OSError as exc:
        return exc.strerror or str(exc)
    try:
        screen(data)
    except BonedbError as exc:
        return str(exc)
    return f"not a readable image: {why_unreadable(data)}"


def skip_reasons(paths: list[str]) -> dict[str, str]:
    """skip_reason for each of PATHS (the few files left out: read again only to say why)."""
    return {path: skip_reason(path) for path in paths}
