"""The candidate search through its inverted file (used from 20,000 descriptors on) against the exact search."""

from __future__ import annotations

import struct

import numpy as np

from boneclf.data import candidates
from boneclf.data.candidates import local_candidates
from boneclf.data.same_picture import read_signature


def _signature(points: np.ndarray, descriptors: np.ndarray, m_points: np.ndarray, m_descriptors: np.ndarray) -> bytes:
    return b"".join((struct.pack("<HHH", 256, len(points), len(m_points)),
                     np.round(points * 8).astype("<u2").tobytes(), descriptors.tobytes(),
                     np.round(m_points * 8).astype("<u2").tobytes(), m_descriptors.tobytes()))


def _copy(rng: np.random.Generator, points: np.ndarray, descriptors: np.ndarray, bits: int
          ) -> tuple[np.ndarray, np.ndarray]:
    """Half the keypoints turned 10 degrees about the centre and shifted, BITS bits of each descriptor flipped;
    the other half new."""
    angle = np.radians(10)
    turn = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    moved = np.clip((points - 128) @ turn.T + 128 + 5, 0, 255).astype(np.float32)
    flipped = np.unpackbits(descriptors, axis=1)
    for row in flipped:
        row[rng.choice(256, bits, replace=False)] ^= 1
    kept = np.arange(len(points)) % 2 == 0
    new_points = rng.uniform(0, 255, points.shape).astype(np.float32)
    new_descriptors = rng.integers(0, 256, descriptors.shape, dtype=np.uint8)
    new_points[kept], new_descriptors[kept] = moved[kept], np.packbits(flipped, axis=1)[kept]
    return new_points, new_descriptors


def test_the_index_finds_the_copies_the_exact_search_finds():
    rng = np.random.default_rng(3)
    pictures = 400  # 25,600 descriptors: past the exact search's limit, so the inverted file answers
    points = rng.uniform(0, 255, (pictures, 2, 64, 2)).astype(np.float32)
    descriptors = rng.integers(0, 256, (pictures, 2, 64, 32), dtype=np.uint8)
    signatures = [_signature(p[0], d[0], p[1], d[1]) for p, d in zip(points, descriptors)]
    planted = []
    for number, original in enumerate((7, 99, 250, 301)):
        normal = _copy(rng, points[original, 0], descriptors[original, 0], 20)
        mirrored = _copy(rng, points[original, 1], descriptors[original, 1], 20)
        # the second and fourth copies are mirror images: their keypoints are the original's mirror image's
        signatures.append(_signature(*(mirrored + normal if number % 2 else normal + mirrored)))
        planted.append((original, len(signatures) - 1))
    assert sum(len(read_signature(s)[0].points) for s in signatures) >= candidates._FLAT_BELOW

    by_index = local_candidates(signatures)
    exact = local_candidates(signatures, exact=True)

    assert exact == set(planted)  # random keypoints never meet: only the copies are candidates
    assert by_index == exact
