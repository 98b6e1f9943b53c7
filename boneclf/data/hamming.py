"""Nearest binary descriptors (ORB's 256 bits) by Hamming distance, through faiss: the one place that
imports faiss and decides how many threads it may use.

faiss parallelises with OpenMP, whose threads spin while they wait. On a machine whose cores are already
busy (training beside an ingest, two test workers, the verifier's own thread pool) the spinning threads
fight the busy ones: measured on this project's 2-core machine under load, one exact search of 15,000
descriptors took 8.5 s with OpenMP's defaults, 1.8 s with passive waiting and 0.6 s on one thread
(BENCHMARKS.md, "Same picture", threads). So waiting is passive unless the user says otherwise, and the
verifier's worker threads, which already keep every core busy, search on one thread each.
"""

from __future__ import annotations

import os
from types import ModuleType

import numpy as np

_faiss: ModuleType | None = None


def faiss() -> ModuleType:
    """The faiss module, imported on first use (only duplicate finding needs it) with passive OpenMP waiting
    unless OMP_WAIT_POLICY is set (OpenMP reads it once, when faiss's own runtime loads). The setting stays in
    this process's environment, so processes it starts inherit it: passive waiting suits them as well."""
    global _faiss
    if _faiss is None:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        import faiss as module

        _faiss = module
    return _faiss


def one_thread() -> None:
    """Let faiss use one OpenMP thread in the calling thread (a pool worker: the pool is the parallelism)."""
    faiss().omp_set_num_threads(1)


def flat_index(descriptors: np.ndarray):
    """An exact index over DESCRIPTORS, (n, 32) uint8."""
    index = faiss().IndexBinaryFlat(256)
    index.add(np.ascontiguousarray(descriptors, dtype=np.uint8))
    return index


def two_nearest(index, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distances, positions), each (n, 2): every query's nearest and second-nearest descriptor in INDEX
    (which must hold at least two). The same distances as OpenCV's brute-force `knnMatch(k=2)`, in a
    fraction of its time."""
    distances, positions = index.search(np.ascontiguousarray(queries, dtype=np.uint8), 2)
    # An index of one descriptor has no second neighbour (-1, distance INT32_MAX), which would pass any ratio
    # test: no second neighbour reads as a tie, so a caller's ratio test refuses the match, as OpenCV's does.
    distances = np.where(positions < 0, 0, distances)
    distances[:, 1] = np.where(positions[:, 1] < 0, distances[:, 0], distances[:, 1])
    return distances, positions
