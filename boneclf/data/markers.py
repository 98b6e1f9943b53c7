"""Burned-in markers: where a radiograph carries side markers (L/R), letters, digits, dates, initials,
rulers or bright rectangles of text, as boxes in the picture's own pixels.

Classifiers learn such marks as shortcuts (Zech et al. 2018; DeGrave et al. 2021): a lead "R" says
which hospital or which side, not what the bone shows. The boxes found here are stored per image
(`boneclf.store.markers`), masked by `--mask-markers` (`boneclf.ml.image_spec`) and measured in every
Grad-CAM (the share of heat inside them).

How, with OpenCV throughout (no morphology or labelling by hand, no model to download):

1. The picture is scaled so its longer side is WORK_SIDE pixels: marker sizes are then comparable
   across a 224 px thumbnail and a 2,900 px original.
2. Bright marks: a white top-hat with a disc wider than a stroke keeps what is brighter than its
   surroundings and narrower than the disc. Text strokes survive it; bone, wider than the disc and
   graded at its edges, mostly does not.
3. Connected components of the thresholded top-hat are characters when they look like one: a height
   within a character's range, strokes thin against that height (the distance transform), edges
   steep (text is burned in with sharp edges, bone's are graded), not a long line.
4. Characters closer than about a character's height join into one box (a dilation, then components
   again): "R608" is one box, not four.
5. Bright rectangles (label plates) holding dark text count as one box too: bright, nearly
   rectangular components of the picture with dark marks inside (a black top-hat).

The thresholds were tuned on planted markers in one part of a real fracture set and measured on
another (benchmarks/markers_benchmark.py, BENCHMARKS.md "Markers").
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

METHOD = "tophat-components-v1"  # stored with each image's boxes: boxes of an older method are recomputed
WORK_SIDE = 512  # pixels, the longer side the detector works at
TOPHAT_DISC = 31  # pixels at WORK_SIDE: wider than any marker's stroke, narrower than a bone
MIN_LIFT = 30  # grey levels above the surroundings (top-hat) for a pixel to be part of a mark
CHAR_HEIGHT = (7, 120)  # a character's height in pixels at WORK_SIDE
MAX_STROKE = 0.8  # stroke width against character height: above it, a blob (sesamoid, bone end)
# The logistic score of a component's FEATURES, standardised; fitted by `markers_benchmark.py --fit`.
FEATURE_MEAN = np.array([3.8469, 1.5038, 1.0625, 0.3335, 3.0807, 0.4887, 0.7425, 0.3025, -0.1772])
FEATURE_SCALE = np.array([0.4269, 0.7815, 0.8734, 0.1551, 0.6828, 0.174, 0.382, 0.2116, 1.0302])
WEIGHTS = np.array([3.083, 1.3025, -3.7051, -1.3444, -0.8621, 0.4087, 0.4393, -0.6444, -2.7148])
BIAS = -4.5602
WEAK_SCORE = 0.1  # a character if a strong one is near: a word needs one strong character
STRONG_SCORE = 0.8  # a character on its own (tuned: BENCHMARKS.md, "Markers")
PLATE_CONTRAST = 45  # grey levels: a plate stands this far above what is around it
JOIN = 0.8  # characters closer than this many heights join into one box
MARGIN = 2  # pixels at WORK_SIDE added around each box: masks cover the glyph's soft edge


@dataclass(frozen=True)
class MarkerBox:
    """A marker's box in the picture's own pixels (x, y: top-left corner), and what found it."""

    x: int
    y: int
    width: int
    height: int
    kind: str  # "text" (bright marks) or "plate" (a bright rectangle holding dark text)

    def to_dict(self) -> dict:
        return {"x": self.x, "y": self.y, "width": self.width, "height": self.height, "kind": self.kind}

    @classmethod
    def from_dict(cls, data: dict) -> MarkerBox:
        return cls(int(data["x"]), int(data["y"]), int(data["width"]), int(data["height"]), str(data["kind"]))


def find_markers(picture: np.ndarray) -> list[MarkerBox]:
    """The marker boxes of a grayscale picture (H, W) of any integer or float type, in its own pixels."""
    grey = _eight_bit(picture)
    height, width = grey.shape
    scale = WORK_SIDE / max(height, width)
    work = working_picture(grey)
    boxes = [(box, "text") for box in _text_boxes(work, scale)] + [(box, "plate") for box in _plate_boxes(work, scale)]
    found = []
    for (x, y, w, h), kind in _merge(boxes):
        x0, y0 = max(0, x - MARGIN), max(0, y - MARGIN)
        x1, y1 = min(work.shape[1], x + w + MARGIN), min(work.shape[0], y + h + MARGIN)
        found.append(MarkerBox(int(np.floor(x0 / scale)), int(np.floor(y0 / scale)),
                               min(width, int(np.ceil(x1 / scale))) - int(np.floor(x0 / scale)),
                               min(height, int(np.ceil(y1 / scale))) - int(np.floor(y0 / scale)), kind))
    return found


def working_picture(grey: np.ndarray) -> np.ndarray:
    """GREY (uint8) scaled so that its longer side is WORK_SIDE pixels."""
    height, width = grey.shape
    scale = WORK_SIDE / max(height, width)
    return cv2.resize(grey, (max(1, round(width * scale)), max(1, round(height * scale))),
                      interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)


def _eight_bit(picture: np.ndarray) -> np.ndarray:
    if picture.ndim == 3:
        picture = picture[..., :3].mean(axis=2) if picture.shape[2] > 1 else picture[..., 0]
    if picture.dtype == np.uint8:
        return np.ascontiguousarray(picture)
    low, high = float(picture.min()), float(picture.max())
    return ((picture - low) * (255.0 / max(high - low, 1e-6))).astype(np.uint8)


@dataclass
class Components:
    """The bright marks of a working picture: their components and, for each one shaped like a character,
    what tells a character from bone (FEATURES), one row per component (label 0, the background, included)."""

    marks: np.ndarray  # 0/255
    labels: np.ndarray
    stats: np.ndarray
    shaped: np.ndarray  # bool per component: a character's height and strokes
    features: np.ndarray  # (components, len(FEATURES)) float
    surroundings: np.ndarray  # median grey level around each component (marks left out)


FEATURES = ("log contrast", "steepness", "roughness", "stroke", "log height", "fill", "log scale", "flatness",
            "surroundings over bone")


def components(work: np.ndarray, scale: float) -> Components:
    """Marks brighter than their surroundings (a white top-hat) and their features.

    contrast: the 75th percentile of the top-hat over the mark; steepness: the edges' gradient (90th
    percentile, per pixel of the source) against that contrast, since burned-in edges are steep and bone's
    graded; roughness: the spread (10th to 90th percentile) of what surrounds the mark against its
    contrast, since text is burned onto background or soft tissue while bone's bright bits sit among bone;
    stroke: the widest stroke (distance transform) against the height, thick for blobs; flatness: the spread
    of grey levels along the strokes' middle against the contrast (a burned-in mark has one grey level); surroundings
    over bone: how far what surrounds the mark is above the picture's bone level, against the contrast."""
    bone = bone_level(work)
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (TOPHAT_DISC, TOPHAT_DISC))
    lift = cv2.morphologyEx(work, cv2.MORPH_TOPHAT, disc)
    marks = np.where(lift >= MIN_LIFT, 255, 0).astype(np.uint8)
    gx = cv2.Sobel(work, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(work, cv2.CV_32F, 0, 1, ksize=3)
    # Per pixel of the source: enlarging a small picture blurs its edges by the same factor.
    gradient = cv2.dilate(cv2.magnitude(gx, gy) * (max(1.0, scale) / 4.0), np.ones((3, 3), np.uint8))
    count, labels, stats, _ = cv2.connectedComponentsWithStats(marks, connectivity=8)
    distance = cv2.distanceTransform(marks, cv2.DIST_L2, 3)
    near_marks = cv2.dilate(marks, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (9, 9)))
    shaped = np.zeros(count, bool)
    features = np.zeros((count, len(FEATURES)), np.float64)
    surroundings = np.full(count, 255.0)
    for i in range(1, count):
        x, y, w, h, area = stats[i]
        tall = max(w, h)
        if not CHAR_HEIGHT[0] <= tall <= CHAR_HEIGHT[1] or min(w, h) < 2 or area < 12:
            continue
        at_edge = x == 0 or y == 0 or x + w == work.shape[1] or y + h == work.shape[0]
        if at_edge and tall > 6 * min(w, h):  # a film's edge or a scanner's border line, not an "I"
            continue
        inside = labels[y:y + h, x:x + w] == i
        stroke = 2.0 * float(distance[y:y + h, x:x + w][inside].max()) / tall
        if stroke > MAX_STROKE:
            continue
        contrast = max(float(np.percentile(lift[y:y + h, x:x + w][inside], 75)), 1.0)
        steep = float(np.percentile(gradient[y:y + h, x:x + w][inside], 90)) / contrast
        pad = max(3, tall // 2)
        x0, y0 = max(0, x - pad), max(0, y - pad)
        x1, y1 = min(work.shape[1], x + w + pad), min(work.shape[0], y + h + pad)
        around = work[y0:y1, x0:x1][near_marks[y0:y1, x0:x1] == 0]
        if around.size < 10:
            continue
        rough = float(np.percentile(around, 90) - np.percentile(around, 10)) / contrast
        surroundings[i] = float(np.median(around))
        middle = inside & (distance[y:y + h, x:x + w] >= 1.5)
        along = work[y:y + h, x:x + w][middle if middle.sum() >= 5 else inside]
        flat = float(np.percentile(along, 90) - np.percentile(along, 10)) / contrast
        shaped[i] = True
        features[i] = (np.log(contrast), steep, min(rough, 3.0), stroke, np.log(tall), area / (w * h), np.log(scale),
                       flat, (surroundings[i] - bone) / contrast)
    return Components(marks, labels, stats, shaped, features, surroundings)


def character_scores(found: Components) -> np.ndarray:
    """Per component, how much it looks like a burned-in character rather than bone (0..1; 0 for those not
    shaped like one): a logistic function of its FEATURES, fitted on planted markers against marks inside the
    body (`benchmarks/markers_benchmark.py --fit`; BENCHMARKS.md, "Markers")."""
    z = ((found.features - FEATURE_MEAN) / FEATURE_SCALE) @ WEIGHTS + BIAS
    return np.where(found.shaped, 1.0 / (1.0 + np.exp(-np.clip(z, -30, 30))), 0.0)


def bone_level(work: np.ndarray) -> float:
    """The grey level above which a pixel is likely bone: the upper part (70th percentile) of the body,
    the body being what is brighter than the background."""
    body = work[work > max(20.0, float(np.percentile(work, 5)) + 10)]
    return float(np.percentile(body, 70)) if body.size else 255.0


def _text_boxes(work: np.ndarray, scale: float) -> list[tuple[int, int, int, int]]:
    found = components(work, scale)
    scores = character_scores(found)
    return _words(np.where((scores >= WEAK_SCORE)[found.labels], 255, 0).astype(np.uint8),
                  np.where((scores >= STRONG_SCORE)[found.labels], 255, 0).astype(np.uint8), found)


def _words(characters: np.ndarray, strong: np.ndarray, found: Components) -> list[tuple[int, int, int, int]]:
    """Boxes of characters joined when closer than JOIN of their height, each holding a strong one, with the
    marks (dots, slashes, dashes) that touch the joined region whole, when they are no taller than the word."""
    count, _, stats, _ = cv2.connectedComponentsWithStats(characters, connectivity=8)
    if count <= 1:
        return []
    typical = float(np.median(stats[1:, cv2.CC_STAT_HEIGHT]))
    reach = max(3, int(round(JOIN * typical)))
    joined = cv2.dilate(characters, cv2.getStructuringElement(cv2.MORPH_RECT, (2 * reach + 1, reach + 1)))
    count, labels, _, _ = cv2.connectedComponentsWithStats(joined, connectivity=8)
    held = np.unique(labels[strong > 0])
    boxes = []
    for i in held[held > 0]:
        ys, xs = np.nonzero((labels == i) & (characters > 0))
        x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
        for mark in np.unique(found.labels[(labels == i) & (found.marks > 0)]):
            mx, my, mw, mh, _ = found.stats[mark]
            if mark and mh <= 1.5 * (y1 - y0) and mw <= 1.5 * (x1 - x0):
                x0, y0, x1, y1 = min(x0, int(mx)), min(y0, int(my)), max(x1, int(mx + mw)), max(y1, int(my + mh))
        boxes.append((x0, y0, x1 - x0, y1 - y0))
    return boxes


def _plate_boxes(work: np.ndarray, scale: float) -> list[tuple[int, int, int, int]]:
    """Label plates: dark text on a bright rectangle that stands out from what is around it. The text is found
    as bright text on the inverted picture; most such "text" is the dark gaps between bones, so a plate
    must also be there: a bright, nearly rectangular component around the text, not much larger than it,
    with surroundings darker than it by PLATE_CONTRAST all round."""
    boxes = []
    for x, y, w, h in _text_boxes(255 - work, scale):
        level = float(np.median(work[y:y + h, x:x + w]))
        x0, y0 = max(0, x - 2 * h), max(0, y - 2 * h)
        x1, y1 = min(work.shape[1], x + w + 2 * h), min(work.shape[0], y + h + 2 * h)
        region = work[y0:y1, x0:x1]
        bright = np.where(region >= level - PLATE_CONTRAST / 2, 255, 0).astype(np.uint8)
        contours, _ = cv2.findContours(bright, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        centre = (x + w / 2 - x0, y + h / 2 - y0)
        holding = [c for c in contours if cv2.pointPolygonTest(c, centre, False) >= 0]
        if not holding:
            continue
        plate = max(holding, key=cv2.contourArea)
        px, py, pw, ph = cv2.boundingRect(plate)
        (_, _), (rw, rh), _ = cv2.minAreaRect(plate)
        if cv2.contourArea(plate) < 0.85 * rw * rh or pw > 3 * w + 4 or ph > 3 * h + 4:
            continue
        filled = np.zeros_like(bright)
        cv2.drawContours(filled, [plate], -1, 255, thickness=cv2.FILLED)
        ring = cv2.dilate(filled, np.ones((7, 7), np.uint8)) > filled
        if ring.sum() < 10 or float(np.percentile(region[ring], 75)) > level - PLATE_CONTRAST:
            continue
        boxes.append((x0 + px, y0 + py, pw, ph))
    return boxes


def _merge(boxes: list[tuple[tuple[int, int, int, int], str]]) -> list[tuple[tuple[int, int, int, int], str]]:
    """Overlapping boxes as one (a plate's text is found twice: as the plate and as its strokes)."""
    merged = list(boxes)
    changed = True
    while changed:
        changed = False
        for a in range(len(merged)):
            for b in range(a + 1, len(merged)):
                (ax, ay, aw, ah), akind = merged[a]
                (bx, by, bw, bh), bkind = merged[b]
                if ax < bx + bw and bx < ax + aw and ay < by + bh and by < ay + ah:
                    x0, y0 = min(ax, bx), min(ay, by)
                    x1, y1 = max(ax + aw, bx + bw), max(ay + ah, by + bh)
                    kind = "plate" if "plate" in (akind, bkind) else "text"
                    merged[a] = ((x0, y0, x1 - x0, y1 - y0), kind)
                    del merged[b]
                    changed = True
                    break
            if changed:
                break
    return merged


INPAINT_RADIUS = 5  # pixels at WORK_SIDE: how far around a box cv2.inpaint looks for what to paint it with


def box_mask(shape: tuple[int, int], boxes: list[MarkerBox]) -> np.ndarray:
    """A uint8 mask (255 inside any of BOXES) of a picture of SHAPE (H, W)."""
    mask = np.zeros(shape, np.uint8)
    for box in boxes:
        mask[box.y:box.y + box.height, box.x:box.x + box.width] = 255
    return mask


def mask_markers(picture: np.ndarray, boxes: list[MarkerBox] | None = None) -> np.ndarray:
    """PICTURE (uint8, (H, W) or (H, W, 1)) with its marker boxes (found, unless given) painted over from their
    surroundings (cv2.inpaint, Telea's method): the model sees tissue or background there, not a black hole
    that would be a shortcut of its own."""
    flat = picture[..., 0] if picture.ndim == 3 else picture
    boxes = find_markers(flat) if boxes is None else boxes
    if not boxes:
        return picture
    radius = max(1, round(INPAINT_RADIUS * max(flat.shape) / WORK_SIDE))
    painted = cv2.inpaint(np.ascontiguousarray(flat), box_mask(flat.shape, boxes), radius, cv2.INPAINT_TELEA)
    return painted.reshape(picture.shape)
