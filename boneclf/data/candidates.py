"""Candidate pairs for the same-picture verdict: wide, cheap, and never quadratic.

Two sources, united:

- **Local keypoints.** Every picture's signature (`same_picture.signature`) holds a few dozen ORB
  keypoints of the picture and of its mirror image. All the pictures' descriptors go into one faiss
  binary index (an inverted file over Hamming space); each descriptor, as it is and mirrored, asks for
  its nearest neighbours. Two pictures whose keypoints meet often enough, at positions one similarity
  transform explains, are a candidate. Keypoints survive turns of any angle, flips, crops (the part
  left keeps its keypoints), rescaling, re-encoding and markers, which global hashes do not.
- **Global hashes** (`duplicates.near_pairs`, loosened): pictures with little texture have few
  keypoints, and for them the blurred picture's hash in its eight orientations still finds copies.

A candidate is only a question. `same_picture.verify_pair` answers it on the pixels.
"""

from __future__ import annotations

from collections import defaultdict

import cv2
import numpy as np

from .hamming import faiss as _faiss
from .same_picture import Keys, read_signature

NEIGHBOURS = 4  # nearest descriptors asked for, per descriptor
MAX_DISTANCE = 64  # Hamming bits (of 256) beyond which two descriptors do not meet
MIN_VOTES = 3  # descriptor meetings that make two pictures worth a geometric look
MIN_AGREEING = 4  # meetings one similarity transform must explain (RANSAC, 8-pixel tolerance)
_FLAT_BELOW = 20_000  # descriptors: an exact search is quicker than training an inverted file


def local_candidates(signatures: list[bytes | None]) -> set[tuple[int, int]]:
    """Pairs (i, j), i < j, of pictures whose keypoints meet consistently, as it is or mirrored."""
    keys = [read_signature(s) if s else None for s in signatures]
    owners, positions, descriptors = _stack([k[0] if k else None for k in keys])
    if len(descriptors) < 2:
        return set()
    m_owners, m_positions, m_descriptors = _stack([k[1] if k else None for k in keys])
    index = _index(descriptors)
    meetings: dict[tuple[int, int, bool], list[tuple[int, int]]] = defaultdict(list)
    for mirrored, (q_owners, q_descriptors) in enumerate(((owners, descriptors), (m_owners, m_descriptors))):
        distances, found = _search(index, q_descriptors)
        rows, cols = np.nonzero((distances <= MAX_DISTANCE) & (found >= 0))
        for row, col in zip(rows.tolist(), cols.tolist()):
            hit = int(found[row, col])
            a, b = int(q_owners[row]), int(owners[hit])
            if a != b:
                meetings[(a, b, bool(mirrored))].append((row, hit))
    pairs = set()
    for (a, b, mirrored), met in meetings.items():
        if len(met) < MIN_VOTES:
            continue
        source = (m_positions if mirrored else positions)[[q for q, _ in met]]
        target = positions[[h for _, h in met]]
        if _agreeing(source, target) >= MIN_AGREEING:
            pairs.add((min(a, b), max(a, b)))
    return pairs


def _stack(keys: list[Keys | None]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    owners = [np.full(len(k.points), i, dtype=np.int64) for i, k in enumerate(keys) if k is not None]
    if not owners:
        return np.zeros(0, np.int64), np.zeros((0, 2), np.float32), np.zeros((0, 32), np.uint8)
    return (np.concatenate(owners), np.concatenate([k.points for k in keys if k is not None]),
            np.ascontiguousarray(np.concatenate([k.descriptors for k in keys if k is not None])))


def _index(descriptors: np.ndarray):
    faiss = _faiss()
    if len(descriptors) < _FLAT_BELOW:
        index = faiss.IndexBinaryFlat(256)
    else:
        # An inverted file: about sqrt(n) lists, each query visiting a few of them. Measured against the
        # exact search in BENCHMARKS.md ("Same picture", candidate search).
        lists = int(min(65536, max(256, 4 * np.sqrt(len(descriptors)))))
        index = faiss.IndexBinaryIVF(faiss.IndexBinaryFlat(256), 256, lists)
        sample = descriptors[np.random.default_rng(0).permutation(len(descriptors))[: 64 * lists]]
        index.train(sample)
        index.nprobe = 8
    index.add(descriptors)
    return index


def _search(index, queries: np.ndarray, block: int = 200_000) -> tuple[np.ndarray, np.ndarray]:
    distances, found = [], []
    for start in range(0, len(queries), block):
        d, i = index.search(queries[start:start + block], NEIGHBOURS)
        distances.append(d)
        found.append(i)
    return np.concatenate(distances), np.concatenate(found)


def _agreeing(source: np.ndarray, target: np.ndarray) -> int:
    """How many of the meetings one similarity transform explains."""
    if len(source) < 2:
        return len(source)
    matrix, kept = cv2.estimateAffinePartial2D(source, target, method=cv2.RANSAC, ransacReprojThreshold=8.0,
                                               maxIters=500)
    return 0 if matrix is None else int(kept.sum())
