"""Finding leaks between subsets: shared patients or studies, exact and near-duplicate images.

Pure functions over plain tuples, so that split creation and `bonedb audit` use the same code.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

import numpy as np

# Hamming distance (of 256 bits) at or below which two pictures count as near-duplicates; see
# hashing.perceptual_hash for the distances measured on copies and on distinct images.
NEAR_DUPLICATE_BITS = 12


def _crossing(rows: Iterable[tuple], kind: str) -> list[dict]:
    subsets: dict = defaultdict(set)
    paths: dict = defaultdict(list)
    for key, subset, path in rows:
        subsets[key].add(subset)
        paths[key].append((subset, path))
    found = []
    for key in sorted(subsets, key=str):
        if len(subsets[key]) > 1:
            found.append({
                "kind": kind, "key": str(key), "subsets": sorted(subsets[key]),
                "paths": [f"{subset}: {path}" for subset, path in sorted(paths[key])],
            })
    return found


def group_overlaps(patient_rows: Iterable[tuple], study_rows: Iterable[tuple]) -> list[dict]:
    """Patients and studies found in more than one subset; rows are (key, subset, path)."""
    return _crossing(patient_rows, "patient") + _crossing(study_rows, "study")


def exact_duplicates(rows: Iterable[tuple]) -> list[dict]:
    """Identical files (same content hash) in more than one subset; rows are (hash, subset, path)."""
    return _crossing(((h, s, p) for h, s, p in rows if h), "exact duplicate")


def near_duplicates(rows: list[tuple], max_bits: int = NEAR_DUPLICATE_BITS) -> list[dict]:
    """Pairs of pictures in different subsets whose perceptual hashes differ by at most `max_bits`.

    rows are (perceptual hash hex, subset, path). Every cross-subset pair is compared, vectorised:
    hashes become rows of uint64 words, and XOR plus a popcount gives the distance.
    """
    rows = [r for r in rows if r[0]]
    if not rows:
        return []
    words = np.array([np.frombuffer(bytes.fromhex(h), dtype=">u8") for h, _, _ in rows]).astype(np.uint64)
    by_subset: dict[str, list[int]] = defaultdict(list)
    for index, (_, subset, _) in enumerate(rows):
        by_subset[subset].append(index)
    names = sorted(by_subset)
    found = []
    for x, first in enumerate(names):
        for second in names[x + 1:]:
            a_idx, b_idx = np.array(by_subset[first]), np.array(by_subset[second])
            b_words = words[b_idx]
            for start in range(0, len(a_idx), 256):
                block = a_idx[start:start + 256]
                dist = np.bitwise_count(words[block][:, None, :] ^ b_words[None, :, :]).sum(axis=2)
                for i, j in zip(*np.nonzero(dist <= max_bits)):
                    a, b = rows[block[i]], rows[b_idx[j]]
                    found.append({
                        "kind": "near duplicate", "distance": int(dist[i, j]), "subsets": [first, second],
                        "paths": [f"{a[1]}: {a[2]}", f"{b[1]}: {b[2]}"],
                    })
    return sorted(found, key=lambda f: (f["distance"], f["paths"]))
