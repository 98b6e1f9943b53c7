"""Burned-in markers, measured on real radiographs with planted ones: recall and false boxes.

Takes folders of real radiographs (e.g. a Kaggle-style fracture set's class folders, MURA humerus;
never committed to the project) and plants markers into each picture the way scanners and technicians
burn them in: side markers (L, R, LT, RT), letters, digits, dates, initials and label plates (a bright
rectangle holding dark text), in several fonts (DejaVu Sans, Serif and Mono, Liberation Sans, Pillow's own),
sizes (2.5 to 9 % of the picture's longer side), intensities (70 to 200 grey levels above what is under
them), positions (near a border, over soft tissue, over the dark background), sometimes blurred or
re-encoded as JPEG. Planted markers never land on bone (the bright part of the picture) or on a
marker the picture already carries (what the detector finds in it before planting).

- recall: a planted marker counts as found when at least 90 % of its ink lies inside detected boxes
  (what masking needs: ink outside a box stays visible to the model);
- new false boxes: boxes in the planted picture that touch no planted marker and none of the boxes
  found before planting, per 100 pictures;
- boxes in the body: boxes found in the unplanted picture that lie mostly inside the body (`body_mask`),
  per 100 pictures: real markers sit beside the anatomy, so these are mostly false boxes on bone or
  tissue (checked by eye on a sample: BENCHMARKS.md "Markers").

Pictures are split by a hash of their path into a tuning part and a report part; `--part tune` for
choosing thresholds, `--part report` for the figures in BENCHMARKS.md.

    python benchmarks/markers_benchmark.py /work/data/kaggle-fracture --part report --limit 1000
"""

from __future__ import annotations

import argparse
import hashlib
import io
import random
import re
import sys
import time
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from boneclf.data.markers import FEATURES, WORK_SIDE, MarkerBox, components, find_markers, working_picture

FONT_FILES = {
    "dejavu-sans-bold": "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",
    "dejavu-serif": "/usr/share/fonts/truetype/dejavu/DejaVuSerif.ttf",
    "dejavu-mono": "/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf",
    "liberation-sans": "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
}
TEXTS = {
    "side": ["L", "R", "LT", "RT", "L", "R"],
    "letters": ["AP", "LAT", "PA", "OBL", "STANDING"],
    "digits": ["608", "R608", "L38", "B07", "12", "4"],
    "date": ["12/03/19", "2019-03-12", "03.12.19"],
    "initials": ["JD", "M.K.", "ABR"],
}
EXTENSIONS = (".png", ".jpg", ".jpeg")


def fonts() -> dict[str, object]:
    """Font name -> a function of pixel size giving a PIL font; the fonts installed here plus Pillow's own."""
    found: dict[str, object] = {name: (lambda size, p=path: ImageFont.truetype(p, size))
                                for name, path in FONT_FILES.items() if Path(path).exists()}
    found["pillow-default"] = lambda size: ImageFont.load_default(size=size)
    return found


def picture_key(path: Path) -> str:
    """What keeps copies of one picture together: MURA's patient folder, else the file name's leading token
    (the fracture set holds turned copies named "93-rotated1-rotated2 - Copy.jpg" beside "93.jpg")."""
    patient = re.search(r"patient\d+", str(path))
    return patient.group(0) if patient else re.match(r"[^-\s(.]*", path.name).group(0)  # type: ignore[union-attr]


def part_of(path: Path) -> str:
    """tune or report, by the picture's key: copies of one picture fall in one part."""
    return "tune" if hashlib.sha256(picture_key(path).encode()).digest()[0] < 128 else "report"


def body_mask(grey: np.ndarray) -> np.ndarray:
    """Where the body is: the bright part of the blurred picture (Otsu), closed, in pieces of 5 % of the
    picture or more. Markers are small pieces of their own, beside it; marks inside it are bone or tissue."""
    blurred = cv2.GaussianBlur(grey, (0, 0), max(1.0, max(grey.shape) / 170))
    _, bright = cv2.threshold(blurred, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    side = max(3, max(grey.shape) // 34) | 1
    bright = cv2.morphologyEx(bright, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (side, side)))
    count, labels, stats, _ = cv2.connectedComponentsWithStats(bright)
    large = np.zeros(count, bool)
    large[1:] = stats[1:, cv2.CC_STAT_AREA] >= 0.05 * bright.size
    return large[labels]


def bone_level(grey: np.ndarray) -> float:
    """The grey level above which a pixel is bone: the upper part of what is not background."""
    body = grey[grey > max(20, np.percentile(grey, 5) + 10)]
    return float(np.percentile(body, 70)) if body.size else 255.0


def ring_median(grey: np.ndarray, box: tuple[int, int, int, int], pad: int) -> float:
    x, y, w, h = box
    x0, y0 = max(0, x - pad), max(0, y - pad)
    x1, y1 = min(grey.shape[1], x + w + pad), min(grey.shape[0], y + h + pad)
    ring = np.ones((y1 - y0, x1 - x0), bool)
    ring[y - y0:y - y0 + h, x - x0:x - x0 + w] = False
    return float(np.median(grey[y0:y1, x0:x1][ring])) if ring.any() else 0.0


def overlaps(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


def as_tuple(box: MarkerBox) -> tuple[int, int, int, int]:
    return box.x, box.y, box.width, box.height


def plant(grey: np.ndarray, rng: random.Random, avoid: list[tuple[int, int, int, int]],
          font_makers: dict[str, object], count: int) -> tuple[np.ndarray, list[dict]]:
    """GREY with COUNT markers drawn in, and for each its ink mask, box and what it is."""
    height, width = grey.shape
    side = max(height, width)
    bone = bone_level(grey)
    out = grey.astype(np.float32)
    planted: list[dict] = []
    for _ in range(count):
        for _attempt in range(40):
            kind = rng.choice(list(TEXTS) + ["plate"])
            text = rng.choice(TEXTS["digits" if kind == "plate" else kind])
            font_name = rng.choice(list(font_makers))
            size = max(8, round(side * rng.uniform(0.025, 0.09)))
            font = font_makers[font_name](size)  # type: ignore[operator]
            probe = ImageDraw.Draw(Image.new("L", (1, 1)))
            left, top, right, bottom = probe.textbbox((0, 0), text, font=font)
            tw, th = right - left, bottom - top
            pad = max(2, size // 5) if kind == "plate" else 0
            bw, bh = tw + 2 * pad, th + 2 * pad
            if bw >= width - 4 or bh >= height - 4:
                continue
            where = rng.choice(["border", "anywhere", "anywhere"])
            if where == "border":
                edge = rng.choice("tblr")
                near = rng.randint(1, max(1, side // 40))
                x = rng.randint(1, width - bw - 1) if edge in "tb" else (near if edge == "l" else width - bw - near)
                y = rng.randint(1, height - bh - 1) if edge in "lr" else (near if edge == "t" else height - bh - near)
            else:
                x, y = rng.randint(1, width - bw - 1), rng.randint(1, height - bh - 1)
            box = (x, y, bw, bh)
            under = grey[y:y + bh, x:x + bw]
            reach = max(2, bh // 4)
            beside = grey[max(0, y - reach):y + bh + reach, max(0, x - reach):x + bw + reach]
            if float(np.percentile(beside, 99)) > bone:  # never on bone, nor touching it
                continue
            if any(overlaps(box, other) for other in avoid + [p["box"] for p in planted]):
                continue
            base = float(np.median(under))
            ink = Image.new("L", (bw, bh), 0)
            ImageDraw.Draw(ink).text((pad - left, pad - top), text, fill=255, font=font)
            alpha = np.asarray(ink, np.float32) / 255.0
            lift = rng.uniform(70, 200)
            bright = min(255.0, base + lift)
            region = out[y:y + bh, x:x + bw]
            if kind == "plate":  # a bright plate, the text dark on it
                region[:] = bright * (1 - alpha) + max(0.0, bright - lift) * alpha
                mask = np.ones((bh, bw), bool)
            else:
                region[:] = region * (1 - alpha) + bright * alpha
                mask = alpha > 0.5
            planted.append({"box": box, "mask": mask, "kind": kind, "font": font_name, "size": size,
                            "where": where if where == "border" else ("soft tissue" if base > 40 else "background"),
                            "lift": lift})
            break
    picture = Image.fromarray(np.clip(out, 0, 255).astype(np.uint8))
    if rng.random() < 0.3:
        picture = picture.filter(ImageFilter.GaussianBlur(rng.uniform(0.4, 0.9)))
    if rng.random() < 0.3:
        buffer = io.BytesIO()
        picture.save(buffer, "JPEG", quality=rng.randint(70, 95))
        picture = Image.open(io.BytesIO(buffer.getvalue())).convert("L")
    return np.asarray(picture), planted


def ink_covered(mask: np.ndarray, box: tuple[int, int, int, int], found: list[MarkerBox]) -> float:
    x, y, w, h = box
    covered = np.zeros_like(mask)
    for b in found:
        x0, y0 = max(0, b.x - x), max(0, b.y - y)
        x1, y1 = min(w, b.x + b.width - x), min(h, b.y + b.height - y)
        if x0 < x1 and y0 < y1:
            covered[y0:y1, x0:x1] = True
    return float((covered & mask).sum() / max(1, mask.sum()))


def fit(files: list[Path], font_makers: dict[str, object], seed: int) -> None:
    """Fit the detector's character score (a logistic regression on its FEATURES) and print its constants.

    Positives: components of markers planted (3 per picture) into FILES. Negatives: components that lie
    inside the body (`body_mask` of the unplanted picture) and touch no planted ink: bone and tissue."""
    rows, labels = [], []
    for path in files:
        try:
            grey = np.asarray(Image.open(path).convert("L"))
        except OSError:
            continue
        picture, planted = plant(grey, random.Random(f"fit-{seed}-{path}"), [], font_makers, 3)
        ink = np.zeros(picture.shape, np.float32)
        for p in planted:
            x, y, w, h = p["box"]
            ink[y:y + h, x:x + w] = np.maximum(ink[y:y + h, x:x + w], p["mask"])
        work = working_picture(picture)
        size = (work.shape[1], work.shape[0])
        ink = cv2.resize(ink, size, interpolation=cv2.INTER_LINEAR)
        body = cv2.resize(body_mask(grey).astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0
        found = components(work, WORK_SIDE / max(grey.shape))
        for i in np.nonzero(found.shaped)[0]:
            x, y, w, h, _ = found.stats[i]
            inside = found.labels[y:y + h, x:x + w] == i
            share = float(ink[y:y + h, x:x + w][inside].mean())
            if share > 0.5:
                labels.append(1.0)
            elif share < 0.05 and float(body[y:y + h, x:x + w][inside].mean()) > 0.8:
                labels.append(0.0)
            else:
                continue
            rows.append(found.features[i])
    features, truth = np.asarray(rows), np.asarray(labels)
    mean, scale = features.mean(axis=0), features.std(axis=0) + 1e-9
    z = (features - mean) / scale
    weight = np.where(truth == 1, len(truth) / (2 * truth.sum()), len(truth) / (2 * (1 - truth).sum()))
    w, b = np.zeros(z.shape[1]), 0.0
    for _ in range(4000):  # gradient descent on the class-balanced log loss, a little ridge
        gradient = (1 / (1 + np.exp(-(z @ w + b))) - truth) * weight
        w -= 0.5 * (z.T @ gradient / len(truth) + 1e-4 * w)
        b -= 0.5 * float(gradient.mean())
    score = 1 / (1 + np.exp(-(z @ w + b)))
    print(f"{int(truth.sum())} planted components, {int((1 - truth).sum())} inside the body; features: {FEATURES}")
    for threshold in (0.1, 0.2, 0.5, 0.8, 0.9, 0.95):
        print(f"score >= {threshold}: planted {np.mean(score[truth == 1] >= threshold):.3f}, "
              f"body {int(np.sum(score[truth == 0] >= threshold))}")
    print(f"FEATURE_MEAN = np.array({[round(float(v), 4) for v in mean]})")
    print(f"FEATURE_SCALE = np.array({[round(float(v), 4) for v in scale]})")
    print(f"WEIGHTS = np.array({[round(float(v), 4) for v in w]})")
    print(f"BIAS = {b:.4f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path, help="folders searched for radiographs (PNG, JPEG)")
    parser.add_argument("--part", choices=["tune", "report"], default="report")
    parser.add_argument("--limit", type=int, default=1000, help="pictures at most (drawn at random)")
    parser.add_argument("--markers", type=int, default=2, help="markers planted per picture")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--fit", action="store_true", help="fit the character score on these pictures instead")
    parser.add_argument("--misses", type=Path, help="save missed markers and false boxes here as PNG crops")
    args = parser.parse_args(argv)

    files = sorted(p for folder in args.folders for p in folder.rglob("*") if p.suffix.lower() in EXTENSIONS)
    files = [p for p in files if part_of(p) == args.part]
    random.Random(args.seed).shuffle(files)
    files = files[:args.limit]
    font_makers = fonts()
    if args.fit:
        fit(files, font_makers, args.seed)
        return 0
    found_by: dict[str, list[bool]] = defaultdict(list)
    new_false = on_bone = before_boxes = 0
    seconds = 0.0
    if args.misses:
        args.misses.mkdir(parents=True, exist_ok=True)
    for n, path in enumerate(files):
        try:
            grey = np.asarray(Image.open(path).convert("L"))
        except OSError:  # a truncated file in the set: not the detector's to judge
            continue
        started = time.perf_counter()
        before = find_markers(grey)
        seconds += time.perf_counter() - started
        before_boxes += len(before)
        body = body_mask(grey)
        for b in before:
            if body[b.y:b.y + b.height, b.x:b.x + b.width].mean() > 0.5:
                on_bone += 1
        rng = random.Random(f"{args.seed}-{path}")
        planted_picture, planted = plant(grey, rng, [as_tuple(b) for b in before], font_makers, args.markers)
        after = find_markers(planted_picture)
        for p in planted:
            covered = ink_covered(p["mask"], p["box"], after)
            hit = covered >= 0.9
            for key in ("all", f"kind {p['kind']}", f"font {p['font']}", f"where {p['where']}",
                        "size < 4%" if p["size"] < 0.04 * max(grey.shape) else "size >= 4%",
                        "lift < 110" if p["lift"] < 110 else "lift >= 110"):
                found_by[key].append(hit)
            if not hit and args.misses:
                x, y, w, h = p["box"]
                crop = planted_picture[max(0, y - h):y + 2 * h, max(0, x - w):x + 2 * w]
                Image.fromarray(crop).save(args.misses / f"miss-{n}-{p['kind']}-{covered:.2f}.png")
        for b in after:
            if not any(overlaps(as_tuple(b), p["box"]) for p in planted) and \
                    not any(overlaps(as_tuple(b), as_tuple(a)) for a in before):
                new_false += 1
    pictures = len(files)
    print(f"{pictures} pictures ({args.part} part) from {', '.join(map(str, args.folders))}; "
          f"{len(found_by['all'])} planted markers; {seconds / max(1, pictures) * 1000:.0f} ms per picture")
    print("| planted | markers | recall |\n|---|---|---|")
    for key in sorted(found_by, key=lambda k: (k != "all", k)):
        hits = found_by[key]
        print(f"| {key} | {len(hits)} | {np.mean(hits):.3f} |")
    print(f"boxes before planting: {before_boxes / max(1, pictures) * 100:.1f} per 100 pictures; "
          f"in the body: {on_bone / max(1, pictures) * 100:.1f} per 100 pictures")
    print(f"new false boxes after planting: {new_false / max(1, pictures) * 100:.1f} per 100 pictures")
    return 0


if __name__ == "__main__":
    sys.exit(main())
