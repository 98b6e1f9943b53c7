"""Where `bonedb serve` keeps what it computes (thumbnails, Grad-CAM overlays, reports), and a check at
start that it can write there.

The default is the user's cache folder, one subfolder per database ($XDG_CACHE_HOME/bonedb/serve/NAME,
else ~/.cache/bonedb/serve/NAME), never the working folder: a cache there shows up in `git status`,
and run ids (which name the Grad-CAM folders) are per database.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path

from sqlalchemy.engine import make_url

from boneclf.errors import BonedbError


def user_cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "bonedb" / "serve"


def default_cache_dir(database_url: str) -> Path:
    """The user's cache folder for DATABASE_URL: its database's name and a short hash of where it is
    (the same name on two servers gets two folders; the password takes no part)."""
    url = make_url(database_url)
    where = url.set(password=None).render_as_string(hide_password=True)
    name = Path(url.database).stem if url.get_backend_name() == "sqlite" and url.database else url.database
    slug = re.sub(r"[^A-Za-z0-9._-]", "_", name or "memory")[:40]
    return user_cache_root() / f"{slug}-{hashlib.sha256(where.encode()).hexdigest()[:8]}"


def prepare_cache_dir(folder: Path) -> Path:
    """FOLDER made if need be and checked writable, resolved; a BonedbError in one line if it is not."""
    folder = Path(folder).expanduser().resolve()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder, prefix=".bonedb-probe-"):
            pass
    except OSError as exc:
        raise BonedbError(f"cache folder {folder} cannot be written ({exc.strerror or exc}): give a writable "
                          "folder with --cache-dir") from None
    return folder
