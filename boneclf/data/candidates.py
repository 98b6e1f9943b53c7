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

import cv2
import numpy as np

from .hamming import faiss as _faiss
from .same_picture import Keys, read_signature

NEIGHBOURS = 4  # nearest descriptors asked for, per descriptor
MAX_DISTANCE = 64  # Hamming bits (of 256) beyond which two descriptors do not meet
MIN_VOTES = 3  # descriptor meetings that make two pictures worth a geometric look
MIN_AGREEING = 4  # meetings one similarity transform must explain (RANSAC, 8-pixel tolerance)
_FLAT_BELOW = 20_000  # descriptors: an exact search is quicker than building an inverted file
LIST_SIZE = 512  # descriptors per inverted list, on average
PROBES = 8  # lists a query visits


def local_candidates(signatures: list[bytes | None], exact: bool = False) -> set[tuple[int, int]]:
    """Pairs (i, j), i < j, of pictures whose keypoints meet consistently, as it is or mirrored. EXACT searches
    every descriptor against every other (the reference the index is measured against; quadratic)."""
    keys = [read_signature(s) if s else None for s in signatures]
    owners, positions, descriptors = _stack([k[0] if k else None for k in keys])
    if len(descriptors) < 2:
        return set()
    m_owners, m_positions, m_descriptors = _stack([k[1] if k else None for k in keys])
    index = _index(descriptors, exact)
    # Every meeting of two pictures' descriptors as one row (query picture, indexed picture, mirrored, query
    # descriptor, indexed descriptor), grouped by sorting: a Python loop over them took most of the search's
    # time on real radiographs, whose descriptors meet far more often than random bits do.
    found_rows = []
    for mirrored, (q_owners, q_descriptors) in enumerate(((owners, descriptors), (m_owners, m_descriptors))):
        distances, found = _search(index, q_descriptors)
        rows, cols = np.nonzero((distances <= MAX_DISTANCE) & (found >= 0))
        hits = found[rows, cols]
        a, b = q_owners[rows], owners[hits]
        keep = a != b
        found_rows.append((a[keep], b[keep], np.full(int(keep.sum()), mirrored, np.int64), rows[keep], hits[keep]))
    a, b, mirrored_of, queries, hits = (np.concatenate(column) for column in zip(*found_rows))
    key = (a * len(keys) + b) * 2 + mirrored_of
    order = np.argsort(key, kind="stable")
    key, queries, hits = key[order], queries[order], hits[order]
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    counts = np.diff(np.r_[starts, len(key)])
    pairs = set()
    for start, count in zip(starts[counts >= MIN_VOTES].tolist(), counts[counts >= MIN_VOTES].tolist()):
        pair, mirrored = divmod(int(key[start]), 2)
        first, second = divmod(pair, len(keys))
        met = slice(start, start + count)
        source = (m_positions if mirrored else positions)[queries[met]]
        target = positions[hits[met]]
        if _agreeing(source, target) >= MIN_AGREEING:
            pairs.add((min(first, second), max(first, second)))
    return pairs


def _stack(keys: list[Keys | None]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    owners = [np.full(len(k.points), i, dtype=np.int64) for i, k in enumerate(keys) if k is not None]
    if not owners:
        return np.zeros(0, np.int64), np.zeros((0, 2), np.float32), np.zeros((0, 32), np.uint8)
    return (np.concatenate(owners), np.concatenate([k.points for k in keys if k is not None]),
            np.ascontiguousarray(np.concatenate([k.descriptors for k in keys if k is not None])))


def _index(descriptors: np.ndarray, exact: bool = False):
    """A binary index over DESCRIPTORS: exact when there are few (or when asked), else an inverted file whose
    cost per query does not grow with the number of pictures.

    The inverted file's lists are centred on descriptors drawn at random from the set itself rather than on
    k-means centroids: training k-means over binary descriptors (faiss does it in floats) cost more than the
    whole search (several minutes at 40,000 pictures), and centres drawn from the data follow its density
    all the same. The lists hold about LIST_SIZE descriptors each, however many there are, and the centres
    are found through a graph (HNSW) rather than compared one by one, so a query costs the same at 10,000
    pictures as at a million: the search grows linearly (measured: BENCHMARKS.md, "Candidate search at
    scale", where the recall of copies against the exact search is given too)."""
    faiss = _faiss()
    if exact or len(descriptors) < _FLAT_BELOW:
        index = faiss.IndexBinaryFlat(256)
        index.add(descriptors)
        return index
    lists = max(256, len(descriptors) // LIST_SIZE)
    centres = descriptors[np.sort(np.random.default_rng(0).choice(len(descriptors), lists, replace=False))]
    quantizer = faiss.IndexBinaryHNSW(256, 16)
    quantizer.hnsw.efConstruction = 40
    quantizer.hnsw.efSearch = 2 * PROBES
    quantizer.add(np.ascontiguousarray(centres))
    index = faiss.IndexBinaryIVF(quantizer, 256, lists)
    index.nprobe = PROBES
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
