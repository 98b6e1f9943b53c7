"""Are two pictures the same radiograph? Bonedb's one judgement of duplicates, made on the pixels.

A verdict comes in two steps, wide then strict:

- **Candidates** (`candidates.py`) are pairs whose cheap signatures agree: a few dozen ORB keypoints
  stored per picture (and per mirrored picture), matched through a binary index and checked for a
  consistent geometry, plus the global hashes. They are wide on purpose: a turned, flipped, cropped,
  rescaled, re-encoded or relabelled copy must be among them.
- **Verdicts** (`verify_pair`) are strict and explain themselves. ORB keypoints of both pictures
  (the second also mirrored) are matched, a similarity transform (turn, scale, offset, flip) is
  fitted with RANSAC, the second picture is warped onto the first, and the aligned overlap is
  compared tile by tile by normalised correlation. Two pictures are the same when at least
  MIN_INLIERS keypoints agree on one transform, the overlap covers at least MIN_OVERLAP of the first
  picture and the median tile correlation reaches MIN_SCORE. A burned-in marker spoils a few tiles,
  not the median; two different humeri, however alike in outline, agree on few keypoints and
  correlate poorly once aligned (measured on real radiographs: BENCHMARKS.md, "Same picture").

OpenCV does the keypoints, RANSAC and warping, and faiss the descriptor matching (`hamming.py`): none of it is
written by hand.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image, ImageOps

from .hamming import flat_index, two_nearest
from .pixels import open_image

METHOD = "orb-ransac-similarity-tile-ncc-v2"  # v2: 0.85 (v1 verdicts, at 0.80, are judged again)
# What a confirmed pair must reach (chosen on real radiographs: BENCHMARKS.md, "Same picture").
MIN_INLIERS = 12
MIN_SCORE = 0.85  # median normalised correlation of the aligned overlap's tiles, -1..1
MIN_OVERLAP = 0.25  # share of the first picture the second covers once aligned
SCALE_RANGE = (0.25, 4.0)  # a copy rescaled beyond this is not a copy bonedb looks for
# A picture under SMALL_SIDE pixels (shorter side) carries little of its own: enlarged for keypoints,
# two different small pictures of one bone shape reached 0.82, while turned, flipped and re-encoded
# copies of them stayed at 0.91 or above (benchmarks/same_picture_benchmark.py --synthetic).
SMALL_SIDE = 64
MIN_SCORE_SMALL = 0.88

VERIFY_SIDE = 512  # pictures are compared with their longer side this long
VERIFY_POINTS = 1000
SIGNATURE_SIDE = 256
SIGNATURE_POINTS = 64
SIGNATURE_SPREAD = 4  # keypoints are taken across a 4 x 4 grid
_TILES = 8  # the overlap is cut into 8 x 8 tiles for the correlation
_MIN_TILE_STD = 3.0  # a tile flatter than this (black background) says nothing either way

# Threads: the verifier runs on several pairs at once; OpenCV's own pool would oversubscribe the cores.
cv2.setNumThreads(1)


def grey(image: Image.Image, side: int) -> np.ndarray:
    """The picture as 8-bit grey, its longer side SIDE pixels, contrast-equalised locally (CLAHE)
    so that a gamma, brightness or contrast change moves keypoints little."""
    pixels = _eight_bit(image)
    height, width = pixels.shape
    ratio = side / max(height, width)
    if ratio != 1:  # small pictures are enlarged too: keypoints need room, and one frame makes scales comparable
        pixels = cv2.resize(pixels, (max(1, round(width * ratio)), max(1, round(height * ratio))),
                            interpolation=cv2.INTER_AREA if ratio < 1 else cv2.INTER_LINEAR)
    return _clahe().apply(np.ascontiguousarray(pixels))


def _eight_bit(image: Image.Image) -> np.ndarray:
    """8-bit grey pixels; a 16-bit or 32-bit picture (common in radiographs) is stretched to its own range
    rather than clipped at 255."""
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        wide = np.asarray(image, dtype=np.float32)
        low, high = float(wide.min()), float(wide.max())
        return np.round((wide - low) * (255 / max(high - low, 1e-6))).astype(np.uint8)
    return np.asarray(image if image.mode == "L" else ImageOps.grayscale(image))


def _clahe():
    return cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8))


def _orb(points: int):
    return cv2.ORB.create(nfeatures=points, fastThreshold=5, edgeThreshold=15, patchSize=31)


@dataclass(frozen=True)
class Keys:
    """Keypoints of one picture: positions (n, 2) float32 and ORB descriptors (n, 32) uint8."""

    points: np.ndarray
    descriptors: np.ndarray

    @staticmethod
    def of(pixels: np.ndarray, count: int, spread: int = 1, mask: np.ndarray | None = None) -> Keys:
        """The COUNT strongest keypoints (outside MASK's zeros); with SPREAD > 1, the strongest of each cell
        of a SPREAD x SPREAD grid in turn, so that a burned-in label or the edge of a turned canvas, which
        make the strongest corners, cannot take every place."""
        found, descriptors = _orb(count * (3 if spread > 1 else 1)).detectAndCompute(pixels, mask)
        if descriptors is None or not found:
            return Keys(np.zeros((0, 2), np.float32), np.zeros((0, 32), np.uint8))
        order = np.argsort([-k.response for k in found], kind="stable")
        if spread > 1:
            height, width = pixels.shape
            cell = [min(spread - 1, int(found[i].pt[1] * spread / height)) * spread
                    + min(spread - 1, int(found[i].pt[0] * spread / width)) for i in order]
            rank = np.zeros(len(order), dtype=np.int64)
            seen: dict[int, int] = {}
            for k, c in enumerate(cell):
                rank[k] = seen.get(c, 0)
                seen[c] = rank[k] + 1
            order = order[np.argsort(rank, kind="stable")]
        order = order[:count]
        points = np.array([found[i].pt for i in order], dtype=np.float32)
        return Keys(points, descriptors[order])


# -- Signatures: what ingest stores per picture for the candidate search ---------------------------------

_HEADER = struct.Struct("<HHH")  # width, normal count, mirrored count (positions are in SIGNATURE_SIDE px)


def signature(image: Image.Image) -> bytes:
    """The candidate signature of a picture: its SIGNATURE_POINTS strongest ORB keypoints at
    SIGNATURE_SIDE pixels, of the picture and of its mirror image (positions and descriptors)."""
    pixels = grey(image, SIGNATURE_SIDE)
    keep = _away_from_fill(image, pixels.shape)
    normal = Keys.of(pixels, SIGNATURE_POINTS, SIGNATURE_SPREAD, keep)
    mirrored = Keys.of(np.ascontiguousarray(pixels[:, ::-1]), SIGNATURE_POINTS, SIGNATURE_SPREAD,
                       np.ascontiguousarray(keep[:, ::-1]))
    parts = [_HEADER.pack(pixels.shape[1], len(normal.points), len(mirrored.points))]
    for keys in (normal, mirrored):
        parts.append(np.round(keys.points * 8).astype("<u2").tobytes())  # 1/8 pixel
        parts.append(keys.descriptors.tobytes())
    return b"".join(parts)


def _away_from_fill(image: Image.Image, shape: tuple[int, int]) -> np.ndarray:
    """A keypoint mask (255: may hold keypoints) leaving out black fill reaching the frame and a few pixels
    around it. A copy turned on a grown canvas has black corners whose edges make the strongest corners of
    all; the original has none there, so keypoints spent on them never meet (measured: BENCHMARKS.md,
    "Same picture", candidate search)."""
    height, width = shape
    raw = cv2.resize(_eight_bit(image), (width, height), interpolation=cv2.INTER_AREA)
    dark = (raw <= _FILL_LEVEL).astype(np.uint8)
    _, labels = cv2.connectedComponents(dark)
    frame = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    fill = np.isin(labels, frame[frame > 0])
    near = cv2.dilate(fill.astype(np.uint8), np.ones((9, 9), np.uint8))
    return np.where(near > 0, 0, 255).astype(np.uint8)


_FILL_LEVEL = 4  # grey levels: the black a turn fills in, after re-encoding


def read_signature(data: bytes) -> tuple[Keys, Keys]:
    """(keys of the picture, keys of its mirror image) from `signature`'s bytes."""
    _width, first, second = _HEADER.unpack_from(data)
    offset = _HEADER.size
    found = []
    for count in (first, second):
        points = np.frombuffer(data, "<u2", count * 2, offset).reshape(count, 2).astype(np.float32) / 8
        offset += count * 4
        descriptors = np.frombuffer(data, np.uint8, count * 32, offset).reshape(count, 32)
        offset += count * 32
        found.append(Keys(points, descriptors))
    return found[0], found[1]


# -- Verdicts ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """How the second picture maps onto the first, and how well: the evidence behind same or not."""

    same: bool
    score: float  # median tile correlation of the aligned overlap (-1..1); 0 when no transform was found
    inliers: int  # keypoints agreeing on the transform
    overlap: float  # share of the first picture covered by the second, aligned
    angle: float  # degrees, counter-clockwise, the second onto the first
    scale: float  # the second's pixels onto the first's, at full size
    flipped: bool  # the second is mirrored (left-right) first
    dx: float  # offset in the first picture's full-size pixels
    dy: float

    def explain(self) -> str:
        if self.inliers == 0:
            return "no transform maps one picture onto the other"
        flip = "mirrored, " if self.flipped else ""
        return (f"{flip}turned {self.angle:+.1f} deg, scaled x{self.scale:.2f}, {self.inliers} keypoints agree, "
                f"{self.overlap:.0%} overlap, tile correlation {self.score:.2f}")


NO_MATCH = Verdict(False, 0.0, 0, 0.0, 0.0, 1.0, False, 0.0, 0.0)


class Picture:
    """A picture prepared for verification: grey pixels at VERIFY_SIDE, its keypoints and its mirror's,
    and the ratio from full size (to report transforms in the file's own pixels)."""

    def __init__(self, image: Image.Image):
        self.ratio = VERIFY_SIDE / max(image.size)
        self.small = min(image.size) < SMALL_SIDE
        self.pixels = grey(image, VERIFY_SIDE)
        self.keys = Keys.of(self.pixels, VERIFY_POINTS)
        self._mirrored: Keys | None = None
        self._index = None

    @property
    def index(self):
        """A binary index over this picture's keypoint descriptors, built once: a picture is in many pairs."""
        if self._index is None:
            self._index = flat_index(self.keys.descriptors)
        return self._index

    @classmethod
    def from_bytes(cls, data: bytes) -> Picture:
        """From a file's bytes, within bonedb's pixel limit (`pixels.open_image`)."""
        with open_image(data) as image:
            image.load()
            return cls(image)

    @property
    def mirrored(self) -> Keys:
        if self._mirrored is None:
            self._mirrored = Keys.of(np.ascontiguousarray(self.pixels[:, ::-1]), VERIFY_POINTS)
        return self._mirrored


def verify_pair(first: Picture, second: Picture) -> Verdict:
    """The verdict on FIRST and SECOND: the better of the second as it is and mirrored."""
    best = NO_MATCH
    for flipped in (False, True):
        found = _aligned(first, second, flipped)
        if found is not None and (found.same, found.inliers) > (best.same, best.inliers):
            best = found
        if best.same:  # a copy is the same picture one way only: the mirror need not be tried
            break
    return best


def _aligned(first: Picture, second: Picture, flipped: bool) -> Verdict | None:
    theirs = second.mirrored if flipped else second.keys
    ours = first.keys
    if len(ours.points) < 4 or len(theirs.points) < 4:
        return None
    distances, nearest = two_nearest(first.index, theirs.descriptors)
    # Lowe's ratio test: a keypoint whose best match is hardly better than its second is ambiguous.
    good = np.flatnonzero(distances[:, 0] < 0.8 * distances[:, 1])
    if len(good) < 4:
        return None
    source = theirs.points[good]
    target = ours.points[nearest[good, 0]]
    matrix, kept = cv2.estimateAffinePartial2D(source, target, method=cv2.RANSAC, ransacReprojThreshold=4.0,
                                               maxIters=4000, confidence=0.995)
    if matrix is None:
        return None
    inliers = int(kept.sum())
    scale = float(np.hypot(matrix[0, 0], matrix[1, 0]))
    angle = float(np.degrees(np.arctan2(matrix[1, 0], matrix[0, 0])))
    pixels = np.ascontiguousarray(second.pixels[:, ::-1]) if flipped else second.pixels
    score, overlap = _overlap_score(first.pixels, pixels, matrix)
    full_scale = scale * second.ratio / first.ratio
    needed = MIN_SCORE_SMALL if first.small or second.small else MIN_SCORE
    same = (inliers >= MIN_INLIERS and score >= needed and overlap >= MIN_OVERLAP
            and SCALE_RANGE[0] <= full_scale <= SCALE_RANGE[1])
    return Verdict(same, round(score, 4), inliers, round(overlap, 4), round(angle, 2), round(full_scale, 4),
                   flipped, round(float(matrix[0, 2]) / first.ratio, 1), round(float(matrix[1, 2]) / first.ratio, 1))


def _overlap_score(first: np.ndarray, second: np.ndarray, matrix: np.ndarray) -> tuple[float, float]:
    """(median tile correlation, overlap share) of SECOND warped by MATRIX onto FIRST."""
    height, width = first.shape
    warped = cv2.warpAffine(second, matrix, (width, height), flags=cv2.INTER_LINEAR, borderValue=0)
    inside: np.ndarray = cv2.warpAffine(np.full(second.shape, 255, np.uint8), matrix, (width, height),
                                        flags=cv2.INTER_NEAREST, borderValue=0)
    inside = cv2.erode(inside, np.ones((5, 5), np.uint8)) > 0  # interpolated edges are not the picture
    overlap = float(inside.mean())
    # Per tile, the sums a correlation needs over the pixels inside the overlap, read off integral images
    # (four look-ups a tile) rather than computed tile by tile in Python, which took most of a verdict's time.
    a = np.where(inside, first, 0).astype(np.uint8)
    b = np.where(inside, warped, 0).astype(np.uint8)
    rows = np.array([r[0] for r in np.array_split(np.arange(height), _TILES)] + [height])
    cols = np.array([c[0] for c in np.array_split(np.arange(width), _TILES)] + [width])

    def tiles(total: np.ndarray) -> np.ndarray:
        total = total[np.ix_(rows, cols)]
        return total[1:, 1:] - total[:-1, 1:] - total[1:, :-1] + total[:-1, :-1]

    sum_a, sum_aa = (tiles(t) for t in cv2.integral2(a, sdepth=cv2.CV_64F, sqdepth=cv2.CV_64F))
    sum_b, sum_bb = (tiles(t) for t in cv2.integral2(b, sdepth=cv2.CV_64F, sqdepth=cv2.CV_64F))
    sum_ab = tiles(cv2.integral(a.astype(np.float32) * b, sdepth=cv2.CV_64F))
    count = tiles(cv2.integral(inside.view(np.uint8), sdepth=cv2.CV_64F))
    area = np.outer(np.diff(rows), np.diff(cols))
    scores = _correlations(count, sum_a, sum_b, sum_aa, sum_bb, sum_ab)[count >= 0.5 * area]
    scores = scores[~np.isnan(scores)]
    if len(scores) < 4:  # too little texture in common to judge tile by tile: the whole overlap
        if inside.sum() < 100:
            return 0.0, overlap
        whole = _correlations(*(np.array([v.sum()]) for v in (count, sum_a, sum_b, sum_aa, sum_bb, sum_ab)))[0]
        return (0.0 if np.isnan(whole) else float(whole)), overlap
    return float(np.median(scores)), overlap


def _correlations(count, sum_a, sum_b, sum_aa, sum_bb, sum_ab) -> np.ndarray:
    """Pearson correlations from sums; NaN where either side is flatter than _MIN_TILE_STD (black background
    says nothing either way)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_a, mean_b = sum_a / count, sum_b / count
        std_a = np.sqrt(np.maximum(sum_aa / count - mean_a ** 2, 0))
        std_b = np.sqrt(np.maximum(sum_bb / count - mean_b ** 2, 0))
        correlation = (sum_ab / count - mean_a * mean_b) / (std_a * std_b)
    flat = (count == 0) | (std_a < _MIN_TILE_STD) | (std_b < _MIN_TILE_STD)
    return np.where(flat, np.nan, correlation)
