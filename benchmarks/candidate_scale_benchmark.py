"""How the duplicate candidate search grows with the number of pictures, and `duplicates compute` at 40,000.

Three commands:

- `synthetic`: the shipped candidate search (`duplicates.candidate_pairs`: keypoints through the binary index,
  united with near-hash pairs) on synthetic signatures at growing N, each size in a fresh child process
  (time, peak memory, candidates), with copies planted among them whose recall must hold as N grows; the
  growth is fitted on a log-log scale and extrapolated to a 10-million-image PACS export.
- `build`: real-sized pictures (512 px) made from real radiographs, written in MURA's layout so that
  `bonedb ingest` takes them (never into the project).
- `real`: `bonedb ingest` of that folder into a fresh SQLite database, then `duplicates.compute_duplicates`
  (what `bonedb duplicates compute` calls), its time split into hashing, candidate search and verification
  from the library's own progress phases.

    python benchmarks/candidate_scale_benchmark.py synthetic --sizes 10000,30000,100000,300000,1000000
    python benchmarks/candidate_scale_benchmark.py build /work/data/kaggle-fracture /work/data/mura/MURA-v1.1 \\
        --out /work/scratch/scale18/pacs40k --images 40000
    python benchmarks/candidate_scale_benchmark.py real /work/scratch/scale18/pacs40k

Synthetic signatures have the library's own structure (`same_picture.signature`: 64 ORB keypoints of the
picture and 64 of its mirror image, positions at 256 px and 256-bit descriptors). The bulk's descriptors are
random bits. A planted copy keeps a share of its original's keypoints, moved by one similarity transform
(turned, scaled, shifted; mirrored for some), with a few bits of each descriptor flipped, and new random
keypoints in place of the rest; its near hash is unrelated to its original's (as a crop's or a turn's is), so
only the keypoint search can find it. The keep share and the flipped bits default to what real copies of real
radiographs show (BENCHMARKS.md, "Candidate search at scale").
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

SIDE = 256  # same_picture.SIGNATURE_SIDE: signature positions are in this frame
POINTS = 64  # same_picture.SIGNATURE_POINTS


# -- synthetic signatures ------------------------------------------------------------------------------------


def _pack(normal_points, normal_desc, mirror_points, mirror_desc) -> bytes:
    """One signature in `same_picture.signature`'s byte layout (read back by `read_signature`)."""
    import struct

    head = struct.pack("<HHH", SIDE, len(normal_points), len(mirror_points))
    return b"".join((head, np.round(normal_points * 8).astype("<u2").tobytes(), normal_desc.tobytes(),
                     np.round(mirror_points * 8).astype("<u2").tobytes(), mirror_desc.tobytes()))


def _similarity(rng: np.random.Generator, points: np.ndarray) -> np.ndarray:
    angle = np.radians(rng.uniform(-20, 20))
    scale = rng.uniform(0.8, 1.25)
    rotation = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    centre = np.array([SIDE / 2, SIDE / 2])
    return (points - centre) @ rotation.T + centre + rng.uniform(-20, 20, 2)


def _derived(rng: np.random.Generator, points: np.ndarray, descriptors: np.ndarray, keep: float,
             flip_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """A copy's keys from its original's: KEEP of them moved by one similarity and up to FLIP_BITS bits flipped
    per descriptor (uniformly 0..FLIP_BITS); keypoints moved out of the frame, and the rest, are new random ones."""
    moved = _similarity(rng, points)
    kept = (rng.random(len(points)) < keep) & np.all((moved >= 0) & (moved < SIDE - 1), axis=1)
    new_points = rng.uniform(0, SIDE - 1, points.shape).astype(np.float32)
    new_desc = rng.integers(0, 256, descriptors.shape, dtype=np.uint8)
    bits = np.unpackbits(descriptors, axis=1)
    for row in np.flatnonzero(kept):
        flips = rng.choice(256, int(rng.integers(0, flip_bits + 1)), replace=False)
        bits[row, flips] ^= 1
    flipped = np.packbits(bits, axis=1)
    new_points[kept] = moved[kept]
    new_desc[kept] = flipped[kept]
    return new_points, new_desc


def synthetic_signatures(n: int, planted: int, keep: float, flip_bits: int, seed: int = 0
                         ) -> tuple[list[bytes], list[tuple[int, int]]]:
    """N signatures, the last PLANTED of them copies of earlier ones (half of them mirrored); returns
    (signatures, planted pairs (original, copy))."""
    rng = np.random.default_rng(seed)
    bulk = n - planted
    signatures: list[bytes] = []
    keys: dict[int, tuple[np.ndarray, ...]] = {}
    originals = set(rng.choice(bulk, planted, replace=False).tolist()) if planted else set()
    block = 20_000
    for start in range(0, bulk, block):
        count = min(block, bulk - start)
        points = rng.uniform(0, SIDE - 1, (count, 2, POINTS, 2)).astype(np.float32)
        desc = rng.integers(0, 256, (count, 2, POINTS, 32), dtype=np.uint8)
        for k in range(count):
            signatures.append(_pack(points[k, 0], desc[k, 0], points[k, 1], desc[k, 1]))
            if start + k in originals:
                keys[start + k] = (points[k, 0], desc[k, 0], points[k, 1], desc[k, 1])
    pairs = []
    for number, original in enumerate(sorted(originals)):
        np_, nd, mp, md = keys[original]
        a_points, a_desc = _derived(rng, np_, nd, keep, flip_bits)
        b_points, b_desc = _derived(rng, mp, md, keep, flip_bits)
        if number % 2:  # a mirrored copy: its keypoints are its original's mirror image's, and the other way round
            signatures.append(_pack(b_points, b_desc, a_points, a_desc))
        else:
            signatures.append(_pack(a_points, a_desc, b_points, b_desc))
        pairs.append((original, len(signatures) - 1))
    return signatures, pairs


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure_one(n: int, planted: int, keep: float, flip_bits: int, exact: bool) -> dict:
    """In this process: make the signatures, then time the library's candidate search on them (and, with EXACT,
    the keypoint search with an exact index, the reference for recall)."""
    from boneclf.data.candidates import local_candidates
    from boneclf.data.duplicates import Contents, HashedImage, candidate_pairs, near_pairs

    started = time.perf_counter()
    signatures, pairs = synthetic_signatures(n, planted, keep, flip_bits)
    made = time.perf_counter() - started
    rng = np.random.default_rng(1)
    near = rng.integers(0, 2 ** 63, n, dtype=np.uint64)
    contents = Contents.of([HashedImage(k, f"p{k}", f"{k:016x}", f"{int(near[k]):016x}", s)
                            for k, s in enumerate(signatures)])
    del signatures
    before = _rss_mb()
    cpu = time.process_time()
    started = time.perf_counter()
    found = candidate_pairs(contents)
    seconds = time.perf_counter() - started
    cpu = time.process_time() - cpu
    started = time.perf_counter()
    near_pairs(near)
    near_seconds = time.perf_counter() - started
    wanted = {tuple(sorted((f"{a:016x}", f"{b:016x}"))) for a, b in pairs}
    exact_found = exact_seconds = None
    if exact:
        started = time.perf_counter()
        by_exact = local_candidates([image.picture_signature for image in contents.first], exact=True)
        exact_seconds = time.perf_counter() - started
        exact_found = len({tuple(sorted(p)) for p in pairs} & by_exact)
    return {"exact_found": exact_found, "exact_seconds": exact_seconds,
            "n": n, "seconds": seconds, "cpu": cpu, "near_seconds": near_seconds, "candidates": len(found),
            "planted": len(wanted), "found": len(wanted & found), "rss_before_mb": before, "rss_peak_mb": _rss_mb(),
            "made_seconds": made}


def synthetic(args) -> None:
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = []
    print(f"shipped candidate search ({_index_note()}) on synthetic signatures; {args.planted} planted copies "
          f"per size (keep {args.keep:.0%} of keypoints, up to {args.flip_bits} bits flipped); budget {args.budget} s")
    print("| pictures | descriptors | search s | CPU s | ms / 1,000 pictures | near-hash part s | candidates "
          "| planted found | peak memory GB | vs first size |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for n in sizes:
        if rows and len(rows) >= 2:
            slope = _slope(rows[-2:])
            guess = rows[-1]["seconds"] * (n / rows[-1]["n"]) ** slope
            if guess > args.budget:
                print(f"| {n:,} | {2 * POINTS * n:,} | not run: about {guess:,.0f} s at slope {slope:.2f} | | | | "
                      f"| | | |")
                continue
        env = dict(os.environ)
        out = subprocess.run([sys.executable, __file__, "_one", str(n), str(args.planted), str(args.keep),
                              str(args.flip_bits), str(int(n <= args.exact_up_to))],
                             env=env, capture_output=True, text=True, timeout=args.budget * 3)
        if out.returncode:
            print(out.stderr[-2000:])
            print(f"| {n:,} | failed (exit {out.returncode}) |")
            break
        row = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(row)
        base = rows[0]
        print(f"| {n:,} | {2 * POINTS * n:,} | {row['seconds']:.1f} | {row['cpu']:.1f} | "
              f"{1e6 * row['seconds'] / n:.1f} | {row['near_seconds']:.1f} | {row['candidates']:,} | "
              f"{row['found']}/{row['planted']} | {row['rss_peak_mb'] / 1024:.1f} | "
              f"{row['seconds'] / base['seconds']:.1f}x time for {n / base['n']:.0f}x pictures |", flush=True)
        if row["exact_found"] is not None:
            print(f"|   exact search, same signatures | | {row['exact_seconds']:.1f} | | | | | "
                  f"{row['exact_found']}/{row['planted']} | | |", flush=True)
    if len(rows) >= 2:
        print()
        for a, b in zip(rows, rows[1:]):
            print(f"growth {a['n']:,} -> {b['n']:,}: slope {_slope([a, b]):.2f} (time ~ N^slope)")
        slope = _slope(rows)
        last = _slope(rows[-2:])
        top = rows[-1]
        print(f"least-squares slope over all sizes: {slope:.2f}")
        for target in (10_000_000,):
            for name, s in (("all sizes", slope), ("last two sizes", last)):
                seconds = top["seconds"] * (target / top["n"]) ** s
                print(f"extrapolated to {target:,} pictures from {top['n']:,} at the slope of {name} ({s:.2f}): "
                      f"{seconds:,.0f} s ({seconds / 3600:.1f} h); memory about "
                      f"{top['rss_peak_mb'] / 1024 * target / top['n']:.0f} GB if linear")
    _machine()


def _slope(rows: list[dict]) -> float:
    x = np.log([r["n"] for r in rows])
    y = np.log([r["seconds"] for r in rows])
    return float(np.polyfit(x, y, 1)[0])


def _index_note() -> str:
    from boneclf.data import candidates

    if hasattr(candidates, "LIST_SIZE"):
        return (f"inverted file, sampled centres through HNSW, {candidates.LIST_SIZE} descriptors a list, "
                f"{candidates.PROBES} lists a query")
    return "inverted file, k-means centres, 4 sqrt(n) lists, 8 a query (before)"


def _machine() -> None:
    load = os.getloadavg()
    import faiss

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}; python "
          f"{platform.python_version()}, faiss {faiss.__version__}; load average at the end {load[0]:.1f} "
          f"{load[1]:.1f} {load[2]:.1f}")


# -- real-sized pictures from real radiographs ---------------------------------------------------------------


def _pieces(path: Path) -> list:
    """Four 512-px pictures from one radiograph: its four quadrants, the picture first enlarged to 1024 px on its
    longer side. Quadrants do not overlap, so they are different pictures to bonedb's verifier (a copy must cover
    a quarter of the other picture), unless the source set itself holds copies (the Kaggle-style set does)."""
    from PIL import Image, ImageOps

    with Image.open(path) as image:
        grey = ImageOps.grayscale(image)
    ratio = 1024 / max(grey.size)
    grey = grey.resize((max(2, round(grey.width * ratio)), max(2, round(grey.height * ratio))),
                       Image.Resampling.BICUBIC)
    w, h = grey.width // 2, grey.height // 2
    return [grey.crop(box) for box in ((0, 0, w, h), (w, 0, 2 * w, h), (0, h, w, 2 * h), (w, h, 2 * w, 2 * h))]


def _write_patient(job: tuple[int, str, str]) -> int:
    number, source, out = job
    try:
        pieces = _pieces(Path(source))
    except Exception:  # noqa: BLE001 - an undecodable source (the Kaggle set has a few) is skipped
        return 0
    folder = Path(out) / "MURA-v1.1" / "train" / "XR_HUMERUS" / f"patient{number:05d}" / "study1_negative"
    folder.mkdir(parents=True, exist_ok=True)
    for k, piece in enumerate(pieces, 1):
        piece.save(folder / f"image{k}.png", compress_level=1)
    return len(pieces)


def build(args) -> None:
    from concurrent.futures import ProcessPoolExecutor

    sources = sorted(str(p) for root in args.sources for p in Path(root).rglob("*")
                     if p.suffix.lower() in (".png", ".jpg", ".jpeg") and p.is_file())
    random.Random(0).shuffle(sources)
    needed = -(-args.images // 4)
    jobs = [(k + 1, s, args.out) for k, s in enumerate(sources[: needed + needed // 50])]
    started = time.perf_counter()
    written = 0
    rows = []
    with ProcessPoolExecutor(args.workers) as pool:
        for (number, _, _), count in zip(jobs, pool.map(_write_patient, jobs, chunksize=16)):
            if count and written < args.images:
                rows.append(number)
                written += count
    top = Path(args.out) / "MURA-v1.1"
    with open(top / "train_image_paths.csv", "w") as paths, open(top / "train_labeled_studies.csv", "w") as studies:
        for number in rows:
            study = f"MURA-v1.1/train/XR_HUMERUS/patient{number:05d}/study1_negative/"
            studies.write(f"{study},0\n")
            for k in range(1, 5):
                paths.write(f"{study}image{k}.png\n")
    for name in ("valid_image_paths.csv", "valid_labeled_studies.csv"):
        (top / name).write_text("")
    print(f"{written:,} pictures from {len(rows):,} radiographs in {time.perf_counter() - started:.0f} s -> {args.out}")


# -- duplicates compute on the built folder -------------------------------------------------------------------


def real(args) -> None:
    from boneclf.data.duplicates import compute_duplicates
    from boneclf.data.ingest import ingest_mura
    from boneclf.store.engine import make_engine
    from boneclf.store.migrate import upgrade

    database = Path(args.database)
    database.unlink(missing_ok=True)
    engine = make_engine(f"sqlite:///{database}", create=True)
    upgrade(engine, create=True)
    started = time.perf_counter()
    report = ingest_mura(engine, Path(args.folder), dataset="pacs", parts=("humerus",), splits=("train",))
    print(f"ingest (no file opened): {report.images_added:,} images in {time.perf_counter() - started:.1f} s")
    phases: list[tuple[str, float, float, int]] = []

    @contextmanager
    def timed(total: int, label: str):
        began = time.perf_counter()
        yield lambda n: None
        phases.append((label, began, time.perf_counter(), total))
        # said as each phase ends: a long run stopped half-way still tells what it measured
        print(f"  ({label}: {total:,} in {time.perf_counter() - began:.1f} s, load {os.getloadavg()[0]:.1f})",
              flush=True)

    for run in ("first", "again"):
        phases.clear()
        cpu = time.process_time()
        started = time.perf_counter()
        result = compute_duplicates(engine, "pacs", progress=timed)
        wall = time.perf_counter() - started
        cpu = time.process_time() - cpu
        hashing = next((p for p in phases if p[0].startswith("hashing")), None)
        verifying = next((p for p in phases if p[0].startswith("verifying")), None)
        search_start = hashing[2] if hashing else started
        search_end = verifying[1] if verifying else started + wall
        print(f"\nduplicates compute, {run} run: {wall:.1f} s wall, {cpu:.1f} s CPU; {result.images:,} images, "
              f"{result.candidates:,} candidate pairs, {result.verified_now:,} verified now, "
              f"{result.exact_groups:,} exact groups, {result.near_groups:,} near groups ({result.near_images:,} "
              f"images); {len(result.unreadable)} unreadable")
        if hashing:
            seconds = hashing[2] - hashing[1]
            print(f"  hashing (content hash, near hash, signature): {seconds:.1f} s for {hashing[3]:,} images, "
                  f"{1e3 * seconds / max(1, hashing[3]):.2f} ms per image wall ({os.cpu_count()} cores)")
        print(f"  candidate search (after hashing, until verification starts; includes storing the hashes): "
              f"{search_end - search_start:.1f} s")
        if verifying:
            seconds = verifying[2] - verifying[1]
            print(f"  verification: {seconds:.1f} s for {verifying[3]:,} pairs, "
                  f"{1e3 * seconds / max(1, verifying[3]):.1f} ms per pair wall (pictures prepared included)")
        after = started + wall - (verifying[2] if verifying else search_end)
        print(f"  after verification (groups written): {after:.1f} s")
        print(f"  without hashing: {wall - ((hashing[2] - hashing[1]) if hashing else 0):.1f} s (target: 60 s)")
    _machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    s = commands.add_parser("synthetic")
    s.add_argument("--sizes", default="10000,30000,100000,300000,1000000")
    s.add_argument("--planted", type=int, default=200)
    s.add_argument("--keep", type=float, default=0.5, help="share of an original's keypoints a planted copy keeps")
    s.add_argument("--flip-bits", type=int, default=40, help="most bits flipped in a kept descriptor")
    s.add_argument("--exact-up-to", type=int, default=0,
                   help="also run the exact keypoint search (the recall reference) at sizes up to this")
    s.add_argument("--budget", type=float, default=1200, help="seconds: a size expected to take longer is not run")
    b = commands.add_parser("build")
    b.add_argument("sources", nargs="+")
    b.add_argument("--out", required=True)
    b.add_argument("--images", type=int, default=40_000)
    b.add_argument("--workers", type=int, default=2)
    r = commands.add_parser("real")
    r.add_argument("folder")
    r.add_argument("--database", default="/work/scratch/scale18/pacs.sqlite")
    if len(sys.argv) > 1 and sys.argv[1] == "_one":
        n, planted, keep, flip_bits, exact = sys.argv[2:7]
        print(json.dumps(measure_one(int(n), int(planted), float(keep), int(flip_bits), exact == "1")))
        return
    args = parser.parse_args()
    {"synthetic": synthetic, "build": build, "real": real}[args.command](args)


if __name__ == "__main__":
    main()
