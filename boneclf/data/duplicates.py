"""Duplicate groups: which images of a dataset are the same picture, and computing them on demand.

Two kinds, both stored by `boneclf.store.duplicates`:
- **exact**: files with the same sha256 (two or more of them);
- **near**: pictures that match (`match_pairs`), joined transitively, closest pairs first. Two
  pictures match when their near hashes (`hashing.near_hash`) differ by at most NEAR_THRESHOLD bits
  in some orientation (the 8 flips and 90-degree rotations) and their rotation signatures
  (`hashing.rotation_signature`) confirm it, or when the rotation signatures alone say they are the
  same picture turned by up to 15 degrees from a quarter turn, flipped or not (the near hash loses
  such copies beyond about 2 degrees). A near group is only stored when it holds two or more
  *different* files: byte copies alone are an exact group.

Matching is not quadratic. Multi-index hashing: the 63 informative bits are cut into
`threshold + 1` chunks, and two hashes within `threshold` bits agree exactly on at least one chunk
(pigeonhole), so only images sharing a chunk value are compared. Each image's 8 orientations are
looked up against every image's stored hash. Rotation candidates are the pairs whose
rotation-invariant vectors (a few dozen floats per picture) are nearly parallel, found by blocked
matrix products: quadratic, but n^2 dot products of 48 floats (measured in BENCHMARKS.md). Only
candidates are correlated at every allowed turn. Union-find joins the matches into groups.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sqlalchemy import Connection, Engine, bindparam, select, update

from boneclf.progress import ProgressFactory, silent
from boneclf.results import Result
from boneclf.store.duplicates import (
    DuplicateGroupInfo,
    GroupPlan,
    get_duplicate_group,
    list_duplicate_groups,
    replace_groups,
)
from boneclf.store.queries import dataset_id_of, dataset_root
from boneclf.store.schema import Image

from .hashing import (
    NEAR_METHOD,
    POLAR_METHOD,
    dihedral_variants,
    rotation_invariants,
    rotation_spectra,
    signature_array,
    spectra_scores,
)
from .verify import inspect_files

# Bits (of 63) at or below which two pictures are near duplicates: chosen on the measurements of
# benchmarks/near_duplicate_benchmark.py (BENCHMARKS.md, "Near duplicates").
NEAR_THRESHOLD = 6
# Distinct pictures at most in one near group (see `components`).
NEAR_GROUP_CAP = 16
EXACT_METHOD = "sha256"
# Rotation signatures (`hashing.rotation_signature`): pairs whose invariants have a cosine of at least
# ROTATION_CANDIDATE are checked, and those whose best-turn correlation reaches ROTATION_SCORE match.
# A near-hash match must also reach NEAR_CONFIRM_SCORE when both pictures have a signature. Chosen on
# benchmarks/near_duplicate_benchmark.py (BENCHMARKS.md, "Near duplicates").
ROTATION_CANDIDATE = 0.995
ROTATION_SCORE = 0.985
NEAR_CONFIRM_SCORE = 0.75

_SHIFTS = np.arange(62, -1, -1, dtype=np.uint64)  # bits 1..63 (the DC bit, the top one, is always 0)


def _bits(hashes: np.ndarray) -> np.ndarray:
    """(n, 63) uint8: the informative bits of each hash, most significant first."""
    return ((hashes[:, None] >> _SHIFTS[None, :]) & np.uint64(1)).astype(np.uint8)


def _chunk_keys(bits: np.ndarray, chunks: int) -> list[np.ndarray]:
    keys = []
    # Interleaved, not contiguous: neighbouring bits are neighbouring frequencies, alike from picture to
    # picture, and a chunk of only the lowest ones would put most pictures in a few buckets.
    for part in (np.arange(c, bits.shape[1], chunks) for c in range(chunks)):
        weights = (np.uint64(1) << np.arange(len(part), dtype=np.uint64))
        keys.append((bits[:, part].astype(np.uint64) * weights).sum(axis=1))
    return keys


def near_pairs(hashes: Sequence[int] | np.ndarray, max_bits: int = NEAR_THRESHOLD, block: int = 10_000
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(i, j, bits) for every pair i < j whose hashes differ by at most MAX_BITS in some orientation,
    each pair once with its smallest distance. `block` bounds the memory of one lookup round."""
    hashes = np.asarray(hashes, dtype=np.uint64)
    n = len(hashes)
    if n < 2:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    variants = dihedral_variants(hashes)  # (8, n)
    queries = variants.reshape(-1)
    owners = np.tile(np.arange(n), 8)
    chunks = max_bits + 1
    stored_keys = _chunk_keys(_bits(hashes), chunks)
    query_keys = _chunk_keys(_bits(queries), chunks)
    found_i, found_j, found_d = [], [], []
    for stored, asked in zip(stored_keys, query_keys):
        order = np.argsort(stored, kind="stable")
        sorted_keys = stored[order]
        lo = np.searchsorted(sorted_keys, asked, side="left")
        hi = np.searchsorted(sorted_keys, asked, side="right")
        for start in range(0, len(queries), block):
            stop = start + block
            counts = (hi[start:stop] - lo[start:stop]).astype(np.int64)
            total = int(counts.sum())
            if total == 0:
                continue
            q = np.repeat(np.arange(start, min(stop, len(queries))), counts)
            offsets = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
            j = order[np.repeat(lo[start:stop], counts) + offsets]
            i = owners[q]
            keep = i < j
            q, i, j = q[keep], i[keep], j[keep]
            d = np.bitwise_count(queries[q] ^ hashes[j]).astype(np.int64)
            close = d <= max_bits
            found_i.append(i[close])
            found_j.append(j[close])
            found_d.append(d[close])
    if not found_i:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    i, j, d = np.concatenate(found_i), np.concatenate(found_j), np.concatenate(found_d)
    # One row per pair, its smallest distance: sort by (pair, distance) and keep each pair's first.
    pair = i.astype(np.int64) * n + j
    order = np.lexsort((d, pair))
    pair, d = pair[order], d[order]
    first = np.ones(len(pair), dtype=bool)
    first[1:] = pair[1:] != pair[:-1]
    pair, d = pair[first], d[first]
    return pair // n, pair % n, d


def components(n: int, pairs_i: np.ndarray, pairs_j: np.ndarray, distances: np.ndarray | None = None,
               cap: int | None = None) -> list[list[int]]:
    """Groups of size >= 2 joined by the pairs (union-find), each sorted, in order of their first member.

    With `cap`, the closest pairs are joined first and a join that would make a group larger than
    `cap` is skipped: single linkage chains, and on pictures as alike as radiographs of one body
    part a few false matches would otherwise chain thousands of images into one group (measured:
    BENCHMARKS.md). True families of copies are small and close, so they are joined before the cap
    bites."""
    parent = list(range(n))
    size = [1] * n

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    order = np.lexsort((pairs_j, pairs_i, distances)) if distances is not None else range(len(pairs_i))
    for k in order:
        ra, rb = find(int(pairs_i[k])), find(int(pairs_j[k]))
        if ra == rb or (cap is not None and size[ra] + size[rb] > cap):
            continue
        keep, other = min(ra, rb), max(ra, rb)
        parent[other] = keep
        size[keep] += size[other]
    found: dict[int, list[int]] = defaultdict(list)
    for x in range(n):
        found[find(x)].append(x)
    return [members for _, members in sorted(found.items()) if len(members) > 1]


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


def match_pairs(hashes: np.ndarray, signatures: np.ndarray | None, max_bits: int = NEAR_THRESHOLD
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(i, j, order key) of the matching pairs, smallest key most alike: near-hash matches, confirmed
    by the rotation signature, united with the rotation-signature matches. Without signatures (data
    hashed before they existed) the near-hash matches alone, keyed by their bits."""
    i, j, bits = near_pairs(hashes, max_bits)
    if signatures is None:
        return i, j, bits.astype(np.float64)
    spectra = rotation_spectra(signatures)
    scores = pair_scores(spectra, i, j)
    confirmed = scores >= NEAR_CONFIRM_SCORE
    ri, rj, rscores = rotation_pairs(signatures, spectra=spectra)
    n = len(hashes)
    pair = np.concatenate([i[confirmed] * n + j[confirmed], ri * n + rj])
    key = 1.0 - np.concatenate([scores[confirmed], rscores]).astype(np.float64)
    pair, first = np.unique(pair, return_index=True)
    return pair // n, pair % n, key[first]


@dataclass(frozen=True)
class HashedImage:
    image_id: int
    content_hash: str
    near_hash: str  # 16 hex digits
    rotation_signature: bytes | None = None  # hashing.rotation_signature; None if measured before it existed


def plan_groups(images: Sequence[HashedImage], max_bits: int = NEAR_THRESHOLD) -> list[GroupPlan]:
    """Exact groups (same content hash) and near groups (`match_pairs` over distinct contents). The
    rotation signature takes part only when every picture has one: `duplicates compute` fills in
    those an older ingest left out."""
    by_content: dict[str, list[int]] = defaultdict(list)
    first_of: dict[str, HashedImage] = {}
    for image in sorted(images, key=lambda im: im.image_id):
        by_content[image.content_hash].append(image.image_id)
        first_of.setdefault(image.content_hash, image)
    plans = [GroupPlan("exact", [(image_id, None) for image_id in ids])
             for ids in by_content.values() if len(ids) > 1]
    contents = list(by_content)
    hashes = np.array([int(first_of[c].near_hash, 16) for c in contents], dtype=np.uint64)
    stored = [first_of[c].rotation_signature for c in contents]
    signatures = signature_array(stored) if stored and all(s is not None for s in stored) else None
    i, j, key = match_pairs(hashes, signatures, max_bits)
    variants = dihedral_variants(hashes)
    for members in components(len(contents), i, j, key, NEAR_GROUP_CAP):
        first = members[0]
        # Distance of each member to the group's first picture, in its best orientation.
        distance = np.bitwise_count(variants[:, members] ^ hashes[first]).min(axis=0)
        plans.append(GroupPlan("near", [(image_id, float(bits)) for m, bits in zip(members, distance)
                                        for image_id in by_content[contents[m]]]))
    return plans


def regroup(conn: Connection, dataset_id: int, max_bits: int = NEAR_THRESHOLD) -> list[GroupPlan]:
    """Replace the dataset's groups with those of its hashed images, in the caller's transaction
    (ingest calls it as it writes, so images and their groups land together)."""
    rows = conn.execute(select(Image.id, Image.content_hash, Image.near_hash, Image.rotation_signature)
                        .where(Image.dataset_id == dataset_id, Image.content_hash.is_not(None),
                               Image.near_hash.is_not(None))).all()
    images = [HashedImage(*row) for row in rows]
    plans = plan_groups(images, max_bits)
    method = NEAR_METHOD
    if images and all(image.rotation_signature is not None for image in images):
        method = f"{NEAR_METHOD}+{POLAR_METHOD}"
    replace_groups(conn, dataset_id, plans, method={"exact": EXACT_METHOD, "near": method},
                   threshold={"exact": 0.0, "near": float(max_bits)})
    return plans


@dataclass
class DuplicatesResult(Result):
    dataset: str
    images: int
    hashed_now: int  # images read now because an older ingest stored no near hash or rotation signature
    unreadable: list[str]  # files that could not be read (left out of the groups)
    exact_groups: int
    exact_redundant: int  # images beyond the first of each exact group
    near_groups: int
    near_images: int
    threshold: int
    method: str


def compute_duplicates(engine: Engine, dataset: str, *, max_bits: int = NEAR_THRESHOLD,
                       progress: ProgressFactory = silent) -> DuplicatesResult:
    """Hash what has no hash yet, then replace the dataset's duplicate groups with freshly computed ones."""
    with engine.connect() as conn:
        dataset_id = dataset_id_of(conn, dataset)
        root = dataset_root(conn, dataset_id)
        rows = conn.execute(select(Image.id, Image.path, Image.content_hash, Image.near_hash,
                                   Image.rotation_signature.is_(None).label("unsigned"))
                            .where(Image.dataset_id == dataset_id).order_by(Image.id)).all()
    todo = [r for r in rows if r.content_hash is None or r.near_hash is None or r.unsigned]
    measured: dict[int, tuple[str, str, bytes]] = {}
    unreadable = []
    if todo:
        with progress(len(todo), "hashing images") as advance:
            checks = inspect_files(root, [r.path for r in todo], advance)
        for row, check in zip(todo, checks):
            if check.facts is None:
                unreadable.append(check.error)
            else:
                measured[row.id] = (check.facts.content_hash, check.facts.near_hash,
                                    check.facts.rotation_signature)
    with engine.begin() as conn:
        if measured:
            conn.execute(
                update(Image).where(Image.id == bindparam("b_id"))
                .values(content_hash=bindparam("b_hash"), near_hash=bindparam("b_near"),
                        rotation_signature=bindparam("b_signature"))
                .execution_options(synchronize_session=False),
                [{"b_id": k, "b_hash": c, "b_near": n, "b_signature": r} for k, (c, n, r) in measured.items()],
            )
        plans = regroup(conn, dataset_id, max_bits)
    exact = [p for p in plans if p.kind == "exact"]
    near = [p for p in plans if p.kind == "near"]
    return DuplicatesResult(dataset, len(rows), len(measured), unreadable, len(exact),
                            sum(len(p.members) - 1 for p in exact), len(near), sum(len(p.members) for p in near),
                            max_bits, f"{NEAR_METHOD}+{POLAR_METHOD}")


def list_groups(engine: Engine, dataset: str | None = None, limit: int = 50, offset: int = 0
                ) -> list[DuplicateGroupInfo]:
    """A page of stored groups, largest first."""
    with engine.connect() as conn:
        return list_duplicate_groups(conn, dataset, limit, offset)


def show_group(engine: Engine, group_id: int) -> DuplicateGroupInfo:
    """One stored group with its members."""
    with engine.connect() as conn:
        return get_duplicate_group(conn, group_id)
