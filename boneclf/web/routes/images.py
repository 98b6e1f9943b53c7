"""Images by id only, from inside their dataset's root (`browse.image_file` resolves and checks the path),
and their thumbnails."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import FileResponse

from boneclf.data.browse import image_file
from boneclf.errors import BonedbError

from .. import thumbnails
from ..context import ServerDep

router = APIRouter(tags=["images"])


@router.get("/images/{image_id}")
def image(server: ServerDep, image_id: int) -> FileResponse:
    """The image file itself."""
    return FileResponse(image_file(server.engine, image_id).path, headers={"Cache-Control": "private, max-age=3600"})


@router.get("/images/{image_id}/thumbnail")
def image_thumbnail(server: ServerDep, image_id: int, size: int = 128) -> FileResponse:
    """A JPEG thumbnail (longest side 128 or 256), made once and cached by content hash."""
    if size not in thumbnails.SIZES:
        raise BonedbError(f"size {size}: choose from {', '.join(map(str, thumbnails.SIZES))}")
    found = image_file(server.engine, image_id)
    target = thumbnails.thumbnail(server.cache_dir, found.path, size, found.content_hash)
    return FileResponse(target, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=86400"})
