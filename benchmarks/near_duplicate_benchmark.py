"""Near-duplicate hash: recall on transformed copies, false matches on different pictures, and clustering time.

    python benchmarks/near_duplicate_benchmark.py [--bases 400] [--size 160] [--cluster 40000]

Positives: each synthetic radiograph (boneclf.data.radiograph, the picture `bonedb synth` draws)
against copies made by one transformation (flip, 90-degree rotation, small-angle rotation with
black corners, crop, rescale, JPEG re-encode, and combinations). Negatives: every pair of
*different* pictures of the same body part (the hard case: same anatomy, same drawing style).
Distance = the smallest Hamming distance over the 8 orientations, as matching uses it.
The old 256-bit DCT hash (`perceptual_hash`, identity orientation only, threshold 12) is the baseline.

Clustering: `near_pairs` + union-find on N hashes made of N/4 drawn pictures, each with 3
transformed copies, timed against the same matching done by brute force on the first 4,000.
"""

from __future__ import annotations

import argparse
import io
import os
import random
import time
from collections import defaultdict

import numpy as np
from PIL import Image

from boneclf.data.duplicates import (
    NEAR_CONFIRM_SCORE,
    NEAR_GROUP_CAP,
    NEAR_THRESHOLD,
    ROTATION_CANDIDATE,
    ROTATION_SCORE,
    components,
    match_pairs,
    near_pairs,
)
from boneclf.data.hashing import (
    dihedral_variants,
    near_hash,
    perceptual_hash,
    rotation_invariants,
    rotation_scores,
    rotation_signature,
    signature_array,
)
from boneclf.data.radiograph import draw_radiograph
from boneclf.vocabulary import BODY_PARTS


def _rotate(image: Image.Image, degrees: float, expand: bool) -> Image.Image:
    return image.rotate(degrees, resample=Image.Resampling.BILINEAR, expand=expand, fillcolor=0)


def _crop(image: Image.Image, fraction: float, side: str) -> Image.Image:
    w, h = image.size
    cut_w, cut_h = round(w * fraction), round(h * fraction)
    boxes = {"all": (cut_w // 2, cut_h // 2, w - cut_w // 2, h - cut_h // 2), "left": (cut_w, 0, w, h),
             "top": (0, cut_h, w, h)}
    return image.crop(boxes[side])


def _jpeg(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue()))


def _scale(image: Image.Image, factor: float) -> Image.Image:
    w, h = image.size
    return image.resize((max(8, round(w * factor)), max(8, round(h * factor))), Image.Resampling.LANCZOS)


TRANSFORMS = {
    "jpeg q90": lambda im: _jpeg(im, 90),
    "jpeg q50": lambda im: _jpeg(im, 50),
    "rescale 0.5": lambda im: _scale(im, 0.5),
    "rescale 1.5": lambda im: _scale(im, 1.5),
    "flip left-right": lambda im: im.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
    "flip up-down": lambda im: im.transpose(Image.Transpose.FLIP_TOP_BOTTOM),
    "rotate 90": lambda im: im.transpose(Image.Transpose.ROTATE_90),
    "rotate 180": lambda im: im.transpose(Image.Transpose.ROTATE_180),
    "rotate 270": lambda im: im.transpose(Image.Transpose.ROTATE_270),
    "rotate 2 deg": lambda im: _rotate(im, 2, False),
    "rotate 5 deg": lambda im: _rotate(im, 5, False),
    "rotate -5 deg, canvas grown": lambda im: _rotate(im, -5, True),
    "rotate 10 deg": lambda im: _rotate(im, 10, False),
    "rotate 15 deg": lambda im: _rotate(im, 15, False),
    "crop 5% (centred)": lambda im: _crop(im, 0.05, "all"),
    "crop 10% (centred)": lambda im: _crop(im, 0.10, "all"),
    "crop 5% (one side)": lambda im: _crop(im, 0.05, "left"),
    "crop 10% (one side)": lambda im: _crop(im, 0.10, "top"),
    "crop 20% (one side)": lambda im: _crop(im, 0.20, "left"),
    "rotate 90 + 3 deg + jpeg": lambda im: _jpeg(_rotate(im.transpose(Image.Transpose.ROTATE_90), 3, False), 75),
    "flip + crop 5% + rescale 0.7": lambda im: _scale(_crop(im.transpose(Image.Transpose.FLIP_LEFT_RIGHT), 0.05,
                                                            "all"), 0.7),
}
THRESHOLDS = (4, 6, 8, 10, 12)


def _int(hex_hash: str) -> np.uint64:
    return np.uint64(int(hex_hash, 16))


def _near_distance(a: np.uint64, b: np.uint64) -> int:
    return int(np.bitwise_count(dihedral_variants(np.array([a]))[:, 0] ^ b).min())


def _old_distance(a: str, b: str) -> int:
    return int(np.bitwise_count(np.frombuffer(bytes.fromhex(a), np.uint8) ^ np.frombuffer(bytes.fromhex(b),
                                                                                           np.uint8)).sum())


def _matches(bits: np.ndarray, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Which pairs the grouping joins: near hash within NEAR_THRESHOLD and confirmed by the rotation
    signature, or rotation invariants close and the best-turn correlation high (`match_pairs`)."""
    scores = rotation_scores(first, second)
    similar = (rotation_invariants(first) * rotation_invariants(second)).sum(axis=1)
    return (((bits <= NEAR_THRESHOLD) & (scores >= NEAR_CONFIRM_SCORE))
            | ((similar >= ROTATION_CANDIDATE) & (scores >= ROTATION_SCORE)))


def _draw(rng: random.Random, part: str, size: int) -> Image.Image:
    width = round(size * rng.uniform(0.72, 1.0))
    return draw_radiograph(part, rng.random() < 0.5, width, size, rng)[0]


def precision_recall(bases: int, size: int) -> None:
    rng = random.Random(11)
    pictures = [(BODY_PARTS[k % len(BODY_PARTS)], _draw(rng, BODY_PARTS[k % len(BODY_PARTS)], size))
                for k in range(bases)]
    near = [_int(near_hash(im)) for _, im in pictures]
    old = [perceptual_hash(im) for _, im in pictures]
    signatures = signature_array([rotation_signature(im) for _, im in pictures])
    print(f"{bases} synthetic radiographs, {size} px tall, {len(BODY_PARTS)} body parts\n")
    print("| transformation | " + " | ".join(f"recall <= {t}" for t in THRESHOLDS)
          + " | median bits | max bits | old 256-bit hash recall (<= 12) | with rotation signature |")
    print("|---|" + "---|" * (len(THRESHOLDS) + 4))
    for name, transform in TRANSFORMS.items():
        d_new, d_old, copies = [], [], []
        for (_, im), h, o in zip(pictures, near, old):
            copy = transform(im)
            d_new.append(_near_distance(h, _int(near_hash(copy))))
            d_old.append(_old_distance(o, perceptual_hash(copy)))
            copies.append(rotation_signature(copy))
        d_new, d_old = np.array(d_new), np.array(d_old)
        found = _matches(d_new, signatures, signature_array(copies))
        print(f"| {name} | " + " | ".join(f"{(d_new <= t).mean():.3f}" for t in THRESHOLDS)
              + f" | {int(np.median(d_new))} | {d_new.max()} | {(d_old <= 12).mean():.3f} | {found.mean():.3f} |")
    by_part = defaultdict(list)
    for k, (part, _) in enumerate(pictures):
        by_part[part].append(k)
    negatives, first, second = [], [], []
    for ks in by_part.values():
        hashes = np.array([near[k] for k in ks], dtype=np.uint64)
        variants = dihedral_variants(hashes)
        for x in range(len(ks)):
            distances = np.bitwise_count(variants[:, x:x + 1] ^ hashes[None, x + 1:]).min(axis=0)
            negatives.extend(distances.tolist())
            first.extend([ks[x]] * (len(ks) - x - 1))
            second.extend(ks[x + 1:])
    negatives = np.array(negatives)
    joined = _matches(negatives, signatures[first], signatures[second])
    print(f"\nWith the rotation signature (near hash <= {NEAR_THRESHOLD} confirmed at {NEAR_CONFIRM_SCORE}, or "
          f"invariants >= {ROTATION_CANDIDATE} and score >= {ROTATION_SCORE}): {joined.sum()} false matches of "
          f"{len(joined)} ({joined.mean():.5f}); near hash alone at {NEAR_THRESHOLD}: "
          f"{(negatives <= NEAR_THRESHOLD).sum()}")
    print(f"\nNegatives: {len(negatives)} pairs of different pictures of the same part; "
          f"smallest distance {negatives.min()} bits, 1st percentile {np.percentile(negatives, 1):.0f}")
    print("| threshold | false matches among negative pairs | rate |")
    print("|---|---|---|")
    for t in THRESHOLDS:
        print(f"| {t} | {(negatives <= t).sum()} | {(negatives <= t).mean():.5f} |")


def clustering(total: int, size: int) -> None:
    rng = random.Random(5)
    transforms = list(TRANSFORMS.values())
    hashes, signatures = [], []
    started = time.perf_counter()
    for k in range(total // 4):
        im = _draw(rng, BODY_PARTS[k % len(BODY_PARTS)], size)
        for picture in [im] + [transform(im) for transform in rng.sample(transforms, 3)]:
            hashes.append(_int(near_hash(picture)))
            signatures.append(rotation_signature(picture))
    hashes = np.array(hashes, dtype=np.uint64)
    signatures = signature_array(signatures)
    print(f"\nClustering: {len(hashes)} hashes ({total // 4} pictures x 4) drawn and hashed in "
          f"{time.perf_counter() - started:.1f} s")
    for threshold in (4, 6, 8, "6 + rotation signature"):
        started = time.perf_counter()
        if isinstance(threshold, str):
            i, j, d = match_pairs(hashes, signatures, NEAR_THRESHOLD)
        else:
            i, j, d = near_pairs(hashes, threshold)
        groups = components(len(hashes), i, j, d, NEAR_GROUP_CAP)
        took = time.perf_counter() - started
        families = np.arange(len(hashes)) // 4
        pure = sum(len({families[m] for m in g}) == 1 for g in groups)
        whole = sum(1 for g in groups if len(g) == 4 and len({families[m] for m in g}) == 1)
        largest = max((len(g) for g in groups), default=0)
        print(f"threshold {threshold}: {took:.2f} s, {len(i)} matching pairs, {len(groups)} groups "
              f"({pure} of one family, {whole} families complete of {total // 4}; largest group {largest}; "
              f"uncapped single linkage: largest {max(len(g) for g in components(len(hashes), i, j))})")
    sample = hashes[:4000]
    started = time.perf_counter()
    variants = dihedral_variants(sample)
    pairs = 0
    for x in range(len(sample)):
        pairs += int((np.bitwise_count(variants[:, x:x + 1] ^ sample[None, x + 1:]).min(axis=0) <= 6).sum())
    brute = time.perf_counter() - started
    started = time.perf_counter()
    indexed = len(near_pairs(sample, 6)[0])
    fast = time.perf_counter() - started
    print(f"first 4,000, threshold 6: brute force {brute:.2f} s ({pairs} pairs), multi-index {fast:.2f} s "
          f"({indexed} pairs); brute force grows as n^2, i.e. ~{brute * (len(hashes) / 4000) ** 2:.0f} s at "
          f"{len(hashes)}")


def hash_cost(size: int = 512, pictures: int = 20) -> None:
    """Milliseconds per picture `size` px tall for each hash ingest computes (the pictures are decoded once)."""
    rng = random.Random(3)
    drawn = [_draw(rng, BODY_PARTS[k % len(BODY_PARTS)], size) for k in range(pictures)]
    print(f"\nHashing cost per {size}-px picture (already decoded):")
    for function in (perceptual_hash, near_hash, rotation_signature):
        started = time.perf_counter()
        for picture in drawn * 3:
            function(picture)
        print(f"{function.__name__}: {(time.perf_counter() - started) / (3 * pictures) * 1000:.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bases", type=int, default=400)
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--cluster", type=int, default=40_000)
    parser.add_argument("--cluster-size", type=int, default=64)
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f}, {os.cpu_count()} cores")
    precision_recall(args.bases, args.size)
    hash_cost()
    if args.cluster:
        clustering(args.cluster, args.cluster_size)


if __name__ == "__main__":
    main()
