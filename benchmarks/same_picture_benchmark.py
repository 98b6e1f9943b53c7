"""Same picture, measured on real radiographs: recall per transformation and false pairs.

Takes a folder of distinct real radiographs (e.g. MURA's humerus images; never committed to the
project), plants copies of a sample of them under each transformation a real set holds (turns with
black corners or a grown canvas, flips, quarter turns, crops on one side or centred, rescaling and
re-encoding, brightness, contrast and gamma, burned-in text), and runs bonedb's judgement on all of
them together, as `duplicates compute` does: candidates, then verdicts on the pixels.

- recall: a planted copy counts when its pair with the original is confirmed;
- false pairs: confirmed pairs of two different originals (the folder holds no copies: check it),
  per 1,000,000 pairs of pictures in the set;
- before: the previous judgement (near hash within 6 bits or the rotation signature), on the same set.

    python benchmarks/same_picture_benchmark.py /work/data/mura/MURA-v1.1 --copies 40
"""

from __future__ import annotations

import argparse
import io
import random
import sys
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageOps

from boneclf.data.candidates import local_candidates
from boneclf.data.duplicates import CANDIDATE_BITS, near_pairs
from boneclf.data.hamming import one_thread
from boneclf.data.hashing import (
    near_hash,
    rotation_invariants,
    rotation_signature,
    rotation_spectra,
    signature_array,
    spectra_scores,
)
from boneclf.data.same_picture import Picture, signature, verify_pair

# The previous judgement's constants (boneclf 0.1's duplicates.py), for the "before" figures.
ROTATION_CANDIDATE = 0.995
ROTATION_SCORE = 0.985


def rotation_pairs(signatures: np.ndarray, min_score: float = ROTATION_SCORE,
                   min_similarity: float = ROTATION_CANDIDATE, block: int = 1024,
                   spectra: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(i, j, score) for every pair i < j of signatures (uint8 rows) that are the same picture turned
    by up to POLAR_MAX_TURN degrees from a quarter turn, flipped or not.

    Candidates are the pairs whose rotation invariants are nearly parallel, found block by block with
    matrix products; only those are correlated at every allowed turn."""
    n = len(signatures)
    empty = np.zeros(0, dtype=np.int64)
    if n < 2:
        return empty, empty, np.zeros(0, dtype=np.float32)
    spectra = rotation_spectra(signatures) if spectra is None else spectra
    invariants = rotation_invariants(signatures, spectra=spectra)
    # Sorted along their main axis of variation: two unit vectors with a cosine of c lie within
    # sqrt(2 - 2c) of each other, so also along that axis, and each block of rows is compared only
    # with the rows that far ahead of it in this order (measured: BENCHMARKS.md).
    centred = invariants - invariants.mean(axis=0)
    axis = np.linalg.eigh(centred.T @ centred)[1][:, -1]
    position = centred @ axis
    order = np.argsort(position, kind="stable")
    invariants, position = invariants[order], position[order]
    reach = np.sqrt(max(0.0, 2 - 2 * min_similarity)) + 1e-6
    found_i, found_j = [], []
    for start in range(0, n, block):
        stop = min(n, start + block)
        end = int(np.searchsorted(position, position[stop - 1] + reach, side="right"))
        similar = invariants[start:stop] @ invariants[start:end].T
        rows, cols = np.nonzero(similar >= min_similarity)
        rows, cols = rows + start, cols + start
        keep = rows < cols
        found_i.append(order[rows[keep]])
        found_j.append(order[cols[keep]])
    a, b = np.concatenate(found_i).astype(np.int64), np.concatenate(found_j).astype(np.int64)
    i, j = np.minimum(a, b), np.maximum(a, b)
    scores = pair_scores(spectra, i, j)
    close = scores >= min_score
    return i[close], j[close], scores[close]


def pair_scores(spectra: np.ndarray, i: np.ndarray, j: np.ndarray, block: int = 8192) -> np.ndarray:
    """`rotation_scores` of the pairs (i, j) from the pictures' `rotation_spectra`, a block at a time
    to bound memory."""
    scores = np.zeros(len(i), dtype=np.float32)
    for start in range(0, len(i), block):
        stop = start + block
        scores[start:stop] = spectra_scores(spectra[i[start:stop]], spectra[j[start:stop]])
    return scores


def _turn(image, low, high, grow, rng):
    angle = rng.uniform(low, high) * rng.choice((-1, 1))
    return image.rotate(angle, resample=Image.Resampling.BICUBIC, expand=grow)


def _crop(image, low, high, centred, rng):
    width, height = image.size
    cut = rng.uniform(low, high)
    if centred:
        dx, dy = int(width * cut / 2), int(height * cut / 2)
        return image.crop((dx, dy, width - dx, height - dy))
    side = rng.choice(("left", "right", "top", "bottom"))
    box = {"left": (int(width * cut), 0, width, height), "right": (0, 0, int(width * (1 - cut)), height),
           "top": (0, int(height * cut), width, height), "bottom": (0, 0, width, int(height * (1 - cut)))}[side]
    return image.crop(box)


def _encode(image, fmt, quality=None, scale=1.0):
    if scale != 1.0:
        image = image.resize((max(8, round(image.width * scale)), max(8, round(image.height * scale))),
                             Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, fmt, **({"quality": quality} if quality else {}))
    return Image.open(io.BytesIO(buffer.getvalue()))


def _gamma(image, rng):
    g = rng.uniform(0.5, 1.8)
    lut = [round(255 * (v / 255) ** g) for v in range(256)]
    return image.point(lut)


def _text(image, rng):
    marked = image.copy()
    draw = ImageDraw.Draw(marked)
    width, height = marked.size
    x, y = rng.uniform(0.05, 0.7) * width, rng.uniform(0.05, 0.85) * height
    draw.rectangle((x, y, x + 0.2 * width, y + 0.06 * height), fill=255)
    draw.text((rng.uniform(0.05, 0.6) * width, rng.uniform(0.85, 0.95) * height), "R  L  2019-03-04 ACC 12345",
              fill=230)
    return marked


PLANTS = {
    "turn 2-10 deg, black corners": lambda im, r: _turn(im, 2, 10, False, r),
    "turn 15-20 deg, black corners": lambda im, r: _turn(im, 15, 20, False, r),
    "turn 15-20 deg, canvas grown": lambda im, r: _turn(im, 15, 20, True, r),
    "mirror (left-right)": lambda im, r: ImageOps.mirror(im),
    "flip (upside down)": lambda im, r: ImageOps.flip(im),
    "quarter turn": lambda im, r: im.transpose(r.choice((Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_270))),
    "crop 10-20%, one side": lambda im, r: _crop(im, 0.10, 0.20, False, r),
    "crop 20%, centred": lambda im, r: _crop(im, 0.20, 0.20, True, r),
    "rescale 0.5x, JPEG q50": lambda im, r: _encode(im, "JPEG", 50, 0.5),
    "rescale 1.5x, PNG": lambda im, r: _encode(im, "PNG", None, 1.5),
    "JPEG q75": lambda im, r: _encode(im, "JPEG", 75),
    "brightness and contrast": lambda im, r: ImageEnhance.Contrast(ImageEnhance.Brightness(im).enhance(
        r.uniform(0.7, 1.3))).enhance(r.uniform(0.7, 1.4)),
    "gamma 0.5-1.8": _gamma,
    "burned-in text and label": _text,
}


def _load(path: Path) -> Image.Image:
    with Image.open(path) as image:
        return ImageOps.grayscale(image)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="distinct real radiographs (searched recursively)")
    parser.add_argument("--copies", type=int, default=40, help="originals copied per transformation")
    parser.add_argument("--limit", type=int, default=0, help="use at most this many originals (0: all)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    files = sorted(p for p in args.folder.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    if args.limit:
        files = sorted(rng.sample(files, min(args.limit, len(files))))
    print(f"{len(files)} originals from {args.folder}; {args.copies} copies per transformation", flush=True)
    pictures: list[Image.Image] = []
    truth: list[tuple[str, int] | None] = []  # (transformation, original index) of each planted copy
    with ThreadPoolExecutor(args.workers, initializer=one_thread) as pool:
        pictures.extend(pool.map(_load, files))
    truth.extend([None] * len(files))
    for name, plant in PLANTS.items():
        for original in rng.sample(range(len(files)), min(args.copies, len(files))):
            pictures.append(plant(pictures[original], rng))
            truth.append((name, original))
    n = len(pictures)

    started = time.perf_counter()
    with ThreadPoolExecutor(args.workers, initializer=one_thread) as pool:
        signatures = list(pool.map(signature, pictures))
    signing = time.perf_counter() - started
    started = time.perf_counter()
    with ThreadPoolExecutor(args.workers, initializer=one_thread) as pool:
        hashes = np.array([int(h, 16) for h in pool.map(near_hash, pictures)], dtype=np.uint64)
    hashing = time.perf_counter() - started
    started = time.perf_counter()
    local = local_candidates(signatures)
    searching = time.perf_counter() - started
    i, j, _ = near_pairs(hashes, CANDIDATE_BITS)
    candidates = local | {(int(a), int(b)) for a, b in zip(i, j)}
    print(f"signatures {signing / n * 1000:.1f} ms/picture, near hashes {hashing / n * 1000:.1f} ms/picture; "
          f"candidate search {searching:.1f} s: {len(local)} local + {len(i)} hash = {len(candidates)} candidates "
          f"({len(candidates) / n:.2f} per picture)", flush=True)

    started = time.perf_counter()
    prepared: dict[int, Picture] = {}
    needed = sorted({k for pair in candidates for k in pair})
    with ThreadPoolExecutor(args.workers, initializer=one_thread) as pool:
        for k, picture in zip(needed, pool.map(lambda k: Picture(pictures[k]), needed)):
            prepared[k] = picture
    preparing = time.perf_counter() - started
    started = time.perf_counter()
    ordered = sorted(candidates)
    with ThreadPoolExecutor(args.workers, initializer=one_thread) as pool:
        verdicts = dict(zip(ordered, pool.map(lambda p: verify_pair(prepared[p[0]], prepared[p[1]]), ordered)))
    verifying = time.perf_counter() - started
    confirmed = {p for p, v in verdicts.items() if v.same}
    each = preparing / max(1, len(needed)) * 1000
    print(f"verification: {len(needed)} pictures prepared in {preparing:.1f} s ({each:.0f} ms each)"
          f", {len(ordered)} pairs in {verifying:.1f} s ({verifying / max(1, len(ordered)) * 1000:.1f} ms per"
          f" pair, {args.workers} threads); {len(confirmed)} confirmed", flush=True)

    # Before: the previous judgement, near hash within 6 bits confirmed by the rotation signature, or the
    # rotation signature alone.
    started = time.perf_counter()
    with ThreadPoolExecutor(args.workers, initializer=one_thread) as pool:
        rotation = signature_array(list(pool.map(rotation_signature, pictures)))
    bi, bj, _ = near_pairs(hashes, 6)
    ri, rj, _ = rotation_pairs(rotation)
    before = {(int(a), int(b)) for a, b in zip(bi, bj)} | {(int(a), int(b)) for a, b in zip(ri, rj)}
    print(f"before (near hash <= 6 bits or rotation signature): {len(before)} pairs, "
          f"{time.perf_counter() - started:.1f} s", flush=True)

    originals = len(files)
    all_pairs = originals * (originals - 1) // 2

    def false_pairs(found):
        return [(a, b) for a, b in found if a < originals and b < originals]

    recall: dict[str, list[tuple[bool, bool, bool]]] = defaultdict(list)
    for k, planted in enumerate(truth):
        if planted is None:
            continue
        name, original = planted
        pair = (min(k, original), max(k, original))
        recall[name].append((pair in candidates, pair in confirmed, pair in before))
    print()
    scores: dict[str, list[float]] = defaultdict(list)  # tile correlation of each planted pair examined
    for k, planted in enumerate(truth):
        if planted is not None and (pair := (min(k, planted[1]), max(k, planted[1]))) in verdicts:
            scores[planted[0]].append(verdicts[pair].score)
    print("| transformation | copies | candidates found | recall | recall before | lowest score | 5th percentile |")
    print("|---|---|---|---|---|---|---|")
    for name in PLANTS:
        rows, found = recall[name], sorted(scores[name]) or [float("nan")]
        print(f"| {name} | {len(rows)} | {sum(r[0] for r in rows) / len(rows):.3f} | "
              f"{sum(r[1] for r in rows) / len(rows):.3f} | {sum(r[2] for r in rows) / len(rows):.3f} | "
              f"{found[0]:.3f} | {found[len(found) // 20]:.3f} |")
    wrong_now, wrong_before = false_pairs(confirmed), false_pairs(before)
    print()
    print(f"false pairs among {originals} distinct originals ({all_pairs:,} pairs): now {len(wrong_now)} "
          f"({len(wrong_now) / all_pairs * 1e6:.1f} per million), before {len(wrong_before)} "
          f"({len(wrong_before) / all_pairs * 1e6:.1f} per million)")
    different = sorted(v.score for (a, b), v in verdicts.items() if a < originals and b < originals)
    if different:
        print(f"scores of candidate pairs of different originals: highest {different[-1]:.3f}, "
              f"99th percentile {different[int(len(different) * 0.99)]:.3f} ({len(different)} pairs)")
    for a, b in wrong_now[:20]:
        print(f"  false now: {files[a]} ~ {files[b]}: {verdicts[(a, b)].explain()}")
    for a, b in wrong_before[:5]:
        print(f"  false before: {files[a]} ~ {files[b]}")
    missed = [(truth[k], k) for k in range(originals, n)
              if (min(k, truth[k][1]), max(k, truth[k][1])) not in confirmed]  # type: ignore[index]
    for (name, original), k in missed[:20]:
        pair = (min(k, original), max(k, original))
        why = verdicts[pair].explain() if pair in verdicts else "not a candidate"
        print(f"  missed {name}: {files[original].name}: {why}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
