"""The duplicate verifier's cost: keypoint matching by OpenCV's brute force against faiss, and faiss's exact
search under OpenMP's default, passive waiting and one thread, each beside a baseline in the same process.

    python benchmarks/verifier_benchmark.py             # on an idle machine
    python benchmarks/verifier_benchmark.py --busy 2    # with 2 processes spinning beside it (a busy machine)

Threads are set per child process (OpenMP reads OMP_WAIT_POLICY once, when faiss loads), so each setting
runs in a fresh interpreter with the same descriptors.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import subprocess
import sys
import time

import numpy as np

_SEARCH = """
import os, sys, time, numpy as np
from boneclf.data.hamming import faiss, flat_index
if os.environ.get("ONE_THREAD"): faiss().omp_set_num_threads(1)
d = np.random.default_rng(0).integers(0, 256, ({n}, 32), dtype=np.uint8)
index = flat_index(d)
start = time.perf_counter(); index.search(d, 4); print(time.perf_counter() - start)
"""


def _spin(stop) -> None:
    while not stop.is_set():
        sum(range(10_000))


def search_times(n: int) -> dict[str, float]:
    settings = {"OpenMP defaults (active waiting, a thread per core)": {"OMP_WAIT_POLICY": "ACTIVE"},
                "passive waiting (bonedb's default)": {},
                "one thread (a verifier worker)": {"ONE_THREAD": "1"}}
    found = {}
    for name, extra in settings.items():
        env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
        out = subprocess.run([sys.executable, "-c", _SEARCH.format(n=n)], env={**env, **extra},
                             capture_output=True, text=True, check=True).stdout
        found[name] = float(out.strip().splitlines()[-1])
    return found


def matching_times(pairs: int) -> tuple[float, float]:
    import cv2

    from boneclf.data.hamming import flat_index, one_thread, two_nearest

    one_thread()
    rng = np.random.default_rng(1)
    sets = [rng.integers(0, 256, (1000, 32), dtype=np.uint8) for _ in range(pairs + 1)]
    matcher = cv2.BFMatcher(cv2.NORM_HAMMING)
    start = time.perf_counter()
    for a, b in zip(sets, sets[1:]):
        matcher.knnMatch(b, a, k=2)
    opencv = time.perf_counter() - start
    start = time.perf_counter()
    for a, b in zip(sets, sets[1:]):
        two_nearest(flat_index(a), b)
    return opencv / pairs, (time.perf_counter() - start) / pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--descriptors", type=int, default=15_000)
    parser.add_argument("--pairs", type=int, default=200)
    parser.add_argument("--busy", type=int, default=0, help="spinning processes beside the measurement")
    args = parser.parse_args()
    stop = multiprocessing.Event()
    spinners = [multiprocessing.Process(target=_spin, args=(stop,)) for _ in range(args.busy)]
    for p in spinners:
        p.start()
    try:
        opencv, ours = matching_times(args.pairs)
        print(f"matching 1,000 x 1,000 descriptors, two nearest: OpenCV brute force {opencv * 1e3:.2f} ms, "
              f"faiss {ours * 1e3:.2f} ms ({opencv / ours:.1f}x)")
        times = search_times(args.descriptors)
        base = times["OpenMP defaults (active waiting, a thread per core)"]
        for name, seconds in times.items():
            print(f"exact search of {args.descriptors:,} descriptors, {name}: {seconds:.2f} s ({base / seconds:.1f}x)")
    finally:
        stop.set()
        for p in spinners:
            p.join()


if __name__ == "__main__":
    main()
