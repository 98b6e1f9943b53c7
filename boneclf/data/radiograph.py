"""Procedurally drawn radiograph-like images: one bone shape per body part, a visible break when abnormal.

Only the break depends on the label, and only the shape depends on the part; pose, scale,
exposure and noise vary at random, so a classifier has to learn the two things the real
tasks ask for, and a pipeline that scrambles labels or images cannot do well.
"""

from __future__ import annotations

import math
import random

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

# A bone is a segment (x0, y0, x1, y1, width, end radius) in unit coordinates; blobs are (x, y, rx, ry).
Segment = tuple[float, float, float, float, float, float]

_SHAPES: dict[str, dict] = {
    "humerus": {"bones": [(0.5, 0.16, 0.5, 0.9, 0.12, 0.08)], "blobs": [(0.5, 0.14, 0.14, 0.12)]},
    "shoulder": {
        "bones": [(0.47, 0.42, 0.52, 0.98, 0.12, 0.06), (0.08, 0.16, 0.68, 0.24, 0.05, 0.035)],
        "blobs": [(0.45, 0.36, 0.17, 0.16)],
    },
    "elbow": {
        "bones": [(0.45, 0.02, 0.5, 0.5, 0.11, 0.075), (0.5, 0.52, 0.88, 0.92, 0.08, 0.05)],
        "blobs": [(0.5, 0.5, 0.1, 0.08)],
    },
    "forearm": {
        "bones": [(0.36, 0.06, 0.39, 0.94, 0.075, 0.05), (0.62, 0.06, 0.63, 0.94, 0.065, 0.045)],
        "blobs": [],
    },
    "finger": {
        "bones": [
            (0.5, 0.06, 0.5, 0.38, 0.09, 0.055),
            (0.5, 0.44, 0.5, 0.68, 0.08, 0.05),
            (0.5, 0.74, 0.5, 0.92, 0.07, 0.045),
        ],
        "blobs": [],
    },
    "hand": {
        "bones": [
            (0.5 + 0.62 * math.sin(a) * 0.45 * 0.25, 0.88, 0.5 + math.sin(a) * 0.45, 0.88 - math.cos(a) * 0.7,
             0.05, 0.035)
            for a in (-0.62, -0.31, 0.0, 0.31, 0.62)
        ],
        "blobs": [],
    },
    "wrist": {
        "bones": [(0.38, 0.62, 0.4, 0.99, 0.1, 0.06), (0.64, 0.64, 0.64, 0.99, 0.07, 0.045)],
        "blobs": [
            (x, y, 0.065, 0.055)
            for x, y in ((0.34, 0.36), (0.47, 0.33), (0.6, 0.36), (0.71, 0.4), (0.38, 0.5), (0.52, 0.48), (0.65, 0.52))
        ],
    },
}

_SUPERSAMPLE = 2


def draw_radiograph(
    part: str, abnormal: bool, width: int, height: int, rng: random.Random
) -> tuple[Image.Image, tuple[float, float] | None]:
    """One grayscale image of `part`, with a break across a bone when `abnormal`, and the
    break's centre in pixels (None when normal), so that tests can check where a model looks."""
    shape = _SHAPES[part]
    sw, sh = width * _SUPERSAMPLE, height * _SUPERSAMPLE
    background = rng.randint(15, 45)
    image = Image.new("L", (sw, sh), background)
    draw = ImageDraw.Draw(image)

    angle = math.radians(rng.uniform(-20, 20))
    scale = rng.uniform(0.75, 1.05)
    shift = (rng.uniform(-0.1, 0.1), rng.uniform(-0.08, 0.08))

    def to_pixels(x: float, y: float) -> tuple[float, float]:
        # Rotate and scale about the centre, then map the unit square onto the canvas.
        dx, dy = (x - 0.5) * scale, (y - 0.5) * scale
        rx = dx * math.cos(angle) - dy * math.sin(angle) + 0.5 + shift[0]
        ry = dx * math.sin(angle) + dy * math.cos(angle) + 0.5 + shift[1]
        return rx * sw, ry * sh

    unit = min(sw, sh) * scale
    tissue = background + rng.randint(25, 45)
    cx, cy = to_pixels(0.5 + rng.uniform(-0.08, 0.08), 0.5)
    tw, th = rng.uniform(0.3, 0.48), rng.uniform(0.45, 0.62)
    draw.ellipse([cx - tw * sw, cy - th * sh, cx + tw * sw, cy + th * sh], fill=tissue)
    # A lead side marker ("L"/"R" plate) in a corner, as on most real films: same for both labels.
    mx, my = rng.choice((0.08, 0.78)) * sw, rng.choice((0.05, 0.85)) * sh
    draw.rectangle([mx, my, mx + 0.12 * sw, my + 0.08 * sh], fill=rng.randint(180, 255))

    bone = min(255, tissue + rng.randint(120, 170))
    for x, y, rx, ry in shape["blobs"]:
        px, py = to_pixels(x, y)
        draw.ellipse([px - rx * unit, py - ry * unit, px + rx * unit, py + ry * unit], fill=bone)
    for x0, y0, x1, y1, w, r in shape["bones"]:
        p0, p1 = to_pixels(x0, y0), to_pixels(x1, y1)
        draw.line([p0, p1], fill=bone, width=max(1, round(w * unit)))
        for px, py in (p0, p1):
            draw.ellipse([px - r * unit, py - r * unit, px + r * unit, py + r * unit], fill=bone)

    # Drawn before the break so that a normal and a broken image of the same seed differ only there.
    noise_seed, noise_sigma = rng.getrandbits(32), rng.uniform(3, 8)
    break_at = None
    if abnormal:
        bx, by = _draw_break(draw, shape["bones"], to_pixels, unit, tissue, rng)
        break_at = (bx / _SUPERSAMPLE, by / _SUPERSAMPLE)

    image = image.filter(ImageFilter.GaussianBlur(radius=0.6 * _SUPERSAMPLE))
    image = image.resize((width, height), Image.Resampling.LANCZOS)
    noise_rng = np.random.default_rng(noise_seed)
    noise = noise_rng.normal(0, noise_sigma, (height, width)) + _texture(noise_rng, width, height)
    pixels = np.clip(np.asarray(image, dtype=np.float32) + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels), break_at


def _texture(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Soft mottling of its own for every picture, as tissue and trabecular bone give real films: without
    it two pictures of one bone shape differ only in pose and pixel noise, and bonedb's duplicate judgement
    (same_picture.py) would rightly call some of them the same radiograph."""
    cells = rng.normal(0, 1, (max(2, height // 6), max(2, width // 6))).astype(np.float32)
    smooth = np.asarray(Image.fromarray(cells, mode="F").resize((width, height), Image.Resampling.BICUBIC))
    return smooth * (_TEXTURE_SIGMA / max(float(smooth.std()), 1e-6))


_TEXTURE_SIGMA = 10.0


def _draw_break(draw, bones: list[Segment], to_pixels, unit: float, tissue: int, rng: random.Random):
    """A dark gap across a bone, slightly oblique, as a displaced fracture line looks on film."""
    x0, y0, x1, y1, w, _ = bones[rng.randrange(len(bones))]
    t = rng.uniform(0.35, 0.65)
    mx, my = x0 + (x1 - x0) * t, y0 + (y1 - y0) * t
    length = math.hypot(x1 - x0, y1 - y0)
    nx, ny = -(y1 - y0) / length, (x1 - x0) / length  # unit normal to the bone
    tilt = rng.uniform(-0.35, 0.35)
    nx, ny = nx + tilt * (x1 - x0) / length, ny + tilt * (y1 - y0) / length
    half = 0.8 * w
    a = to_pixels(mx - nx * half, my - ny * half)
    b = to_pixels(mx + nx * half, my + ny * half)
    draw.line([a, b], fill=tissue, width=max(2, round(0.06 * unit)))
    return to_pixels(mx, my)
