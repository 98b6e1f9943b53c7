"""Burned-in markers: found on the picture, painted over for --mask-markers, stored per image by ingest and
`bonedb markers compute`, listed, and outlined with their share of Grad-CAM's heat."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from boneclf.data.markers import MarkerBox, find_markers, mask_markers
from boneclf.data.radiograph import draw_radiograph
from boneclf.ml.gradcam import marker_mass


def _radiograph(seed: int, side: int = 256) -> Image.Image:
    picture, _ = draw_radiograph("humerus", seed % 2 == 0, side, side, random.Random(seed))
    return picture


def _with_marker(picture: Image.Image, text: str = "R", at: tuple[int, int] = (10, 10), size: int = 28,
                 fill: int = 250) -> Image.Image:
    marked = picture.copy()
    ImageDraw.Draw(marked).text(at, text, fill=fill, font=ImageFont.load_default(size=size))
    return marked


def _ink(plain: Image.Image, marked: Image.Image) -> np.ndarray:
    return np.abs(np.asarray(marked, np.int16) - np.asarray(plain, np.int16)) > 40


def _covered(boxes: list[MarkerBox], ink: np.ndarray) -> float:
    """The share of the ink inside the boxes: what masking needs is all of it."""
    inside = np.zeros_like(ink)
    for b in boxes:
        inside[b.y:b.y + b.height, b.x:b.x + b.width] = True
    return float((inside & ink).sum() / ink.sum())


def _ink_box(plain: Image.Image, marked: Image.Image) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(_ink(plain, marked))
    return int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)


def _bone(picture: Image.Image) -> np.ndarray:
    """The drawn bone: the largest bright piece of the picture (the film's lead plate is a small one)."""
    import cv2

    count, labels, stats, _ = cv2.connectedComponentsWithStats((np.asarray(picture) > 150).astype(np.uint8))
    return labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))


def test_a_side_marker_and_a_date_are_boxed_and_the_bone_is_not():
    for seed in range(6):
        plain = _radiograph(seed)
        side_marker = _with_marker(plain, "L", (8, 12))
        marked = _with_marker(side_marker, "12/03/19", (120, 222), size=20)
        found = find_markers(np.asarray(marked))
        assert _covered(found, _ink(plain, side_marker)) == 1.0, (seed, found)
        assert _covered(found, _ink(side_marker, marked)) == 1.0, (seed, found)
        # A box holding no planted ink (the synthetic film's own lead plate, say) never touches the bone.
        ink, bone = _ink(plain, marked), _bone(plain)
        for b in found:
            if not ink[b.y:b.y + b.height, b.x:b.x + b.width].any():
                assert not bone[b.y:b.y + b.height, b.x:b.x + b.width].any(), (seed, b)


def test_a_picture_without_markers_has_no_boxes_on_its_bone():
    for seed in range(6):
        picture = _radiograph(seed, 320)
        bone = _bone(picture)
        for box in find_markers(np.asarray(picture)):  # a box on the bone would mask the finding
            assert not bone[box.y:box.y + box.height, box.x:box.x + box.width].any(), (seed, box)


def test_masking_paints_the_marker_over_from_its_surroundings():
    plain = _radiograph(3)
    marked = np.asarray(_with_marker(plain, "R", (10, 10), size=32))
    x, y, w, h = _ink_box(plain, Image.fromarray(marked))
    painted = mask_markers(marked)
    assert painted.shape == marked.shape and painted.dtype == np.uint8
    assert marked[y:y + h, x:x + w].max() >= 240
    # Painted with the dark background around it: no bright letter, and no black hole either.
    region = painted[y:y + h, x:x + w].astype(np.int16)
    around = np.asarray(plain, np.int16)[y:y + h, x:x + w]
    assert np.abs(region - around).mean() < 15 and region.max() < 150
    # (H, W, 1) pictures, as TensorFlow decodes them, come back in their shape.
    assert mask_markers(marked[..., None]).shape == marked.shape + (1,)


def test_marker_mass_is_the_share_of_heat_in_the_boxes():
    heat = np.zeros((32, 32))
    heat[0:8, 0:8] = 1.0  # a quarter of the heat's cells, all of its mass, top left
    heat[16:32, 16:32] = 0.0
    boxes = [MarkerBox(0, 0, 64, 64, "text")]  # in a 128 x 128 picture: the top-left quarter
    assert marker_mass(heat, (128, 128), boxes) == 1.0
    heat[24:32, 24:32] = 1.0
    assert marker_mass(heat, (128, 128), boxes) == 0.5
    assert marker_mass(heat, (128, 128), []) == 0.0


def _tree(root: Path) -> dict[str, bool]:
    """Eight pictures in class folders, half of them with a burned-in "R"; path -> marked."""
    marked = {}
    for k in range(8):
        label = ("fractured", "not fractured")[k % 2]
        picture = _radiograph(k, 192)
        if k < 4:
            picture = _with_marker(picture, "R", (6, 8), size=24)
        (root / "train" / label).mkdir(parents=True, exist_ok=True)
        picture.save(root / "train" / label / f"x{k}.png")
        marked[f"train/{label}/x{k}.png"] = k < 4
    return marked


def test_ingest_stores_markers_and_the_commands_compute_and_list_them(db_url, tmp_path):
    from click.testing import CliRunner

    from boneclf.cli.main import cli

    def run(*args):
        return CliRunner().invoke(cli, ["--database-url", db_url, *args], catch_exceptions=False)

    marked = _tree(tmp_path / "fx")
    assert run("db", "upgrade").exit_code == 0
    assert run("ingest-folder", str(tmp_path / "fx"), "--dataset", "fx").exit_code == 0
    listed = run("markers", "list", "fx", "--json")
    assert listed.exit_code == 0
    with_boxes = {row["path"] for row in json.loads(listed.output)}
    assert with_boxes == {path for path, is_marked in marked.items() if is_marked}

    # Everything was examined at ingest: compute has nothing left to do, unless asked to redo it.
    result = json.loads(run("markers", "compute", "fx", "--json").output)
    assert result["examined_now"] == 0 and result["examined"] == 8 and result["with_markers"] == 4
    again = run("markers", "compute", "fx", "--again")
    assert again.exit_code == 0 and "8 examined now" in again.output and "4 of 8 examined images" in again.output
    assert run("markers", "compute", "nope").exit_code == 1
