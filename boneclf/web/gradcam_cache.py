"""Predictions and Grad-CAM overlays per (run, image content), computed once and kept on disk.

One explainer (model + compiled Grad-CAM) per run is kept in memory. The model runs only in the
server's model lane (lanes.py): one TensorFlow job at a time, off the request loop. A study's
uncached images go through the model as one batch.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool

from boneclf.data.browse import ImageFile
from boneclf.files import atomic_write

from . import thumbnails
from .lanes import Lane

if TYPE_CHECKING:  # imported when first needed at run time: it loads TensorFlow
    from boneclf.ml.predict import RunExplainer


@dataclass
class Explained:
    outcome: str | None
    probability: float | None
    error: str | None  # why the model could not read the image; no overlay then
    picture: Path  # the overlay (absent when `error`)


class GradCamCache:
    def __init__(self, engine: Engine, cache_dir: Path, lane: Lane):
        self.engine = engine
        self.cache_dir = cache_dir
        self.lane = lane
        self._explainers: dict[int, RunExplainer] = {}  # used from the lane's one thread only

    async def explain(self, run_id: int, images: list[ImageFile]) -> list[Explained]:
        """Run RUN_ID's prediction and overlay for each image, from the cache where it has them."""
        digests = await run_in_threadpool(lambda: [self._digest(image) for image in images])
        found = await run_in_threadpool(self._cached, run_id, digests)
        missing = [(image, digest) for image, digest, hit in zip(images, digests, found) if hit is None]
        if missing:
            key = ("gradcam", run_id, tuple(sorted({digest for _, digest in missing})))
            await self.lane.run(key, partial(self._compute, run_id, missing))
            found = await run_in_threadpool(self._cached, run_id, digests)
        made = [hit for hit in found if hit is not None]
        if len(made) != len(images):  # _compute writes every image's facts, or raises
            raise RuntimeError(f"Grad-CAM cache of run {run_id}: {len(images) - len(made)} result(s) missing")
        return made

    @staticmethod
    def _digest(image: ImageFile) -> str:
        return image.content_hash or thumbnails.file_hash(image.path)

    def _paths(self, run_id: int, digest: str) -> tuple[Path, Path]:
        folder = self.cache_dir / "gradcam" / f"run{run_id}"
        return folder / f"{digest}.png", folder / f"{digest}.json"

    def _cached(self, run_id: int, digests: list[str]) -> list[Explained | None]:
        found: list[Explained | None] = []
        for digest in digests:
            picture, facts = self._paths(run_id, digest)
            if facts.is_file():
                known = json.loads(facts.read_text())
                found.append(Explained(known["outcome"], known["probability"], known["error"], picture))
            else:
                found.append(None)
        return found

    def _compute(self, run_id: int, images: list[tuple[ImageFile, str]]) -> None:
        from boneclf.ml.predict import RunExplainer

        if run_id not in self._explainers:
            self._explainers[run_id] = RunExplainer(self.engine, run_id)
        explainer = self._explainers[run_id]
        explained = explainer.explain([image.path.read_bytes() for image, _ in images])
        for (_, digest), result in zip(images, explained):
            picture, facts = self._paths(run_id, digest)
            if result.overlay is not None:
                buffer = io.BytesIO()
                result.overlay.save(buffer, "PNG")
                atomic_write(picture, buffer.getvalue())
            atomic_write(facts, json.dumps({"outcome": result.outcome, "probability": result.probability,
                                            "error": result.error}).encode())
