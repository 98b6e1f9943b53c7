"""The report's Grad-CAM gallery: a few test images per body part and outcome, with their heatmaps.

Which images: a hash of run and image id, the same every time and typical rather than the most
confident. The heatmaps come from `boneclf.ml.gradcam.explained_overlays`, as `bonedb predict`'s do.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine

from boneclf.errors import BonedbError
from boneclf.ml.evaluation import load_run_model
from boneclf.ml.metrics import THRESHOLD
from boneclf.store.queries import image_identities
from boneclf.store.runs import RunRecord
from boneclf.vocabulary import label_word

from .report_figures import colour_bar, part_colour, tile_png

# (short name, name, truth, prediction): the gallery's columns.
OUTCOMES = (("TP", "true positive", 1, 1), ("FP", "false positive", 0, 1),
            ("FN", "false negative", 1, 0), ("TN", "true negative", 0, 0))
GALLERY_PER_CELL = 2


@dataclass
class Tile:
    data: str  # base64 PNG: the X-ray with its heatmap
    where: str  # where the image comes from, in words
    probability: float
    truth: str  # label word


@dataclass
class GalleryCell:
    name: str  # the outcome, e.g. "true positive"
    total: int  # images there were to choose from
    tiles: list[Tile] = field(default_factory=list)


@dataclass
class GalleryRow:
    part: str
    colour: str
    cells: list[GalleryCell]


@dataclass
class Gallery:
    layer: str  # the layer Grad-CAM read
    colour_bar: str
    rows: list[GalleryRow]
    per_cell: int = GALLERY_PER_CELL
    outcomes: tuple[tuple[str, str], ...] = tuple((short, name) for short, name, _, _ in OUTCOMES)


def gallery_picks(run_id: int, rows: list[dict],
                  per_cell: int = GALLERY_PER_CELL) -> dict[tuple[str, str], tuple[list[dict], int]]:
    """(part, outcome) -> (up to PER_CELL prediction rows, how many there were to choose from). Chosen by a
    hash of run and image id: the same every time, and typical rather than only the most confident."""
    picks: dict[tuple[str, str], tuple[list[dict], int]] = {}
    for part in sorted({r["part"] for r in rows}):
        for short, _name, truth, predicted in OUTCOMES:
            candidates = [r for r in rows if r["part"] == part and int(r["label"]) == truth
                          and (float(r["probability"]) > THRESHOLD) == bool(predicted)]
            candidates.sort(key=lambda r: hashlib.sha256(f"{run_id}:{r['image_id']}".encode()).hexdigest())
            picks[(part, short)] = (candidates[:per_cell], len(candidates))
    return picks


def gallery(engine: Engine, run: RunRecord, rows: list[dict], problems: list[str]) -> Gallery | None:
    """The gallery of RUN from its test predictions ROWS; what went wrong is appended to PROBLEMS (None: the
    model could not be loaded)."""
    from boneclf.ml.gradcam import GradCam, explained_overlays

    picks = gallery_picks(run.id, rows)
    chosen = [r for chosen_rows, _ in picks.values() for r in chosen_rows]
    try:
        loaded = load_run_model(engine, run.id)
    except BonedbError as exc:
        problems.append(f"{exc}; the Grad-CAM gallery is left out")
        return None
    with engine.connect() as conn:
        identities = image_identities(conn, [int(r["image_id"]) for r in chosen])
    readable, pictures, inputs, missing = [], [], [], []
    for r in chosen:
        try:
            picture, model_input = loaded.spec.load(Path(r["path"]).read_bytes())
        except (OSError, BonedbError) as exc:
            missing.append(f"{r['path']}: {getattr(exc, 'strerror', None) or exc}")
            continue
        readable.append(r)
        pictures.append(picture)
        inputs.append(model_input)
    if missing:
        problems.append(f"{len(missing)} gallery image(s) unreadable, e.g. {missing[0]}")
    explain = GradCam(loaded.model, run.architecture)
    # One batch: the gallery is a few dozen images at most, and one shape compiles once.
    drawn = explained_overlays(explain, loaded.spec, pictures, inputs, class_index=1, batch_size=max(1, len(inputs)))
    tiles = {}
    for r, (_output, shown) in zip(readable, drawn):
        identity = identities.get(int(r["image_id"]))
        tiles[r["image_id"]] = Tile(tile_png(shown), identity.describe() if identity else Path(r["path"]).name,
                                    float(r["probability"]), label_word(int(r["label"])))
    table = []
    for part in sorted({part for part, _ in picks}):
        cells = []
        for short, name, _truth, _predicted in OUTCOMES:
            picked, total = picks[(part, short)]
            cells.append(GalleryCell(name, total, [tiles[r["image_id"]] for r in picked if r["image_id"] in tiles]))
        table.append(GalleryRow(part, part_colour(part), cells))
    return Gallery(explain.layer, colour_bar(), table)
