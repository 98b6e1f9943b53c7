"""Duplicate groups: which images of a dataset are the same picture, and computing them on demand.

Two kinds, both stored by `boneclf.store.duplicates`:
- **exact**: files with the same sha256 (two or more of them);
- **near**: pictures that `same_picture.verify_pair` confirmed are the same radiograph (turned,
  flipped, cropped, rescaled, re-encoded, relabelled), joined through confirmed pairs only, plus what
  a steward decided (`bonedb duplicates confirm|reject`).

One judgement, used everywhere: ingest, `duplicates compute`, `split create`, `audit split`, `stats`,
`serve` and the report all read the groups stored here. Candidates come from `candidates` (keypoints
through a binary index, and the near hash in its 8 orientations); each candidate pair of contents is
verified on the pixels once, and its verdict kept in `picture_pairs` (store.picture_pairs), so that
recomputing, re-ingesting or a steward's decision never verifies a pair twice.
"""

from __future__ import annotations

import os
import warnings
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from sqlalchemy import Connection, Engine, bindparam, func, select, update

from boneclf.progress import ProgressFactory, silent
from boneclf.results import Result
from boneclf.store.duplicates import (
    DuplicateGroupInfo,
    GroupPlan,
    get_duplicate_group,
    list_duplicate_groups,
    replace_groups,
)
from boneclf.store.picture_pairs import confirmed_among, known_verdicts, save_verdicts, steward_decisions
from boneclf.store.queries import dataset_id_of, dataset_root
from boneclf.store.reviews import ReviewRecord, review_group
from boneclf.store.schema import Dataset, DuplicateGroup, DuplicateMember, Image

from .candidates import local_candidates
from .hamming import one_thread
from .hashing import dihedral_variants
from .same_picture import METHOD, MIN_SCORE, Picture, Verdict, verify_pair
from .verify import inspect_files, read_regular

EXACT_METHOD = "sha256"
# Near-hash bits (of 63, best of the 8 orientations) within which two pictures are a candidate: wide,
# since the verdict is made on the pixels (BENCHMARKS.md, "Same picture").
CANDIDATE_BITS = 6

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


def near_pairs(hashes: Sequence[int] | np.ndarray, max_bits: int = CANDIDATE_BITS, block: int = 10_000
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


@dataclass(frozen=True)
class HashedImage:
    image_id: int
    path: str
    content_hash: str
    near_hash: str  # 16 hex digits
    picture_signature: bytes | None  # same_picture.signature; None if measured before it existed


@dataclass(frozen=True)
class Contents:
    """The distinct contents (sha256) of a dataset's hashed images: one representative file each."""

    hashes: list[str]
    images: dict[str, list[int]]  # content -> image ids with that content
    first: list[HashedImage]  # the representative image of each content, in `hashes` order

    @staticmethod
    def of(images: Sequence[HashedImage]) -> Contents:
        images_of: dict[str, list[int]] = defaultdict(list)
        first: dict[str, HashedImage] = {}
        for image in sorted(images, key=lambda im: im.image_id):
            images_of[image.content_hash].append(image.image_id)
            first.setdefault(image.content_hash, image)
        hashes = list(images_of)
        return Contents(hashes, dict(images_of), [first[c] for c in hashes])


def candidate_pairs(contents: Contents) -> set[tuple[str, str]]:
    """Pairs of contents (a < b) worth verifying: keypoints that meet, or near hashes within CANDIDATE_BITS."""
    found = local_candidates([image.picture_signature for image in contents.first])
    hashes = np.array([int(image.near_hash, 16) for image in contents.first], dtype=np.uint64)
    i, j, _ = near_pairs(hashes, CANDIDATE_BITS)
    found |= {(int(a), int(b)) for a, b in zip(i, j)}
    return {_ordered(contents.hashes[a], contents.hashes[b]) for a, b in found}


def _ordered(a: str, b: str) -> tuple[str, str]:
    return (a, b) if a < b else (b, a)


Reader = Callable[[str], bytes]


def verify_candidates(pairs: Sequence[tuple[str, str]], path_of: dict[str, str], read: Reader,
                      advance: Callable[[int], None] | None = None, workers: int | None = None
                      ) -> tuple[dict[tuple[str, str], Verdict], list[str]]:
    """Verdicts on PAIRS of contents, read through READ from the representative paths; in threads (OpenCV and
    Pillow release the GIL), each picture prepared once. Returns (verdicts, files that could not be read)."""
    workers = workers or min(8, os.cpu_count() or 1)
    needed = sorted({c for pair in pairs for c in pair})
    pictures: dict[str, Picture | None] = {}
    unreadable: list[str] = []

    def prepare(content: str) -> Picture | None:
        try:
            return Picture.from_bytes(read(path_of[content]))
        except Exception as exc:  # noqa: BLE001 - any undecodable file is left out and named, never a crash
            unreadable.append(f"{path_of[content]}: {exc}")
            return None

    # Pillow's warnings (a palette with transparency) are not the user's to act on and would tear the progress
    # bar; the filter is process-wide, so set in this thread it holds in the workers (as in verify.inspect_files).
    with warnings.catch_warnings(), ThreadPoolExecutor(workers, initializer=one_thread) as pool:
        warnings.simplefilter("ignore")
        pictures.update(zip(needed, pool.map(prepare, needed)))

        def judge(pair: tuple[str, str]) -> Verdict | None:
            first, second = pictures[pair[0]], pictures[pair[1]]
            verdict = None if first is None or second is None else verify_pair(first, second)
            if advance is not None:
                advance(1)
            return verdict

        verdicts = {pair: v for pair, v in zip(pairs, pool.map(judge, pairs)) if v is not None}
    return verdicts, unreadable


def plan_groups(contents: Contents, confirmed: dict[tuple[str, str], float],
                decisions: Sequence[tuple[bool, list[str]]] = ()) -> list[GroupPlan]:
    """Exact groups (same content) and near groups: contents joined by CONFIRMED pairs (content pair ->
    score), after the steward's DECISIONS ((same?, contents judged), oldest first: the latest word on a
    pair stands). A pair a steward called the same joins its pictures whatever their verdict."""
    plans = [GroupPlan("exact", [(image_id, None) for image_id in ids])
             for ids in contents.images.values() if len(ids) > 1]
    said: dict[tuple[str, str], bool] = {}
    for same, judged in decisions:
        present = sorted(set(judged) & contents.images.keys())
        for a_index, a in enumerate(present):
            for b in present[a_index + 1:]:
                said[(a, b)] = same
    edges = {pair: score for pair, score in confirmed.items() if said.get(pair, True)}
    for pair, same in said.items():
        if same:
            edges.setdefault(pair, float("nan"))  # joined by a steward: no verified score
    index = {content: k for k, content in enumerate(contents.hashes)}
    i = np.array([index[a] for a, _ in edges], dtype=np.int64)
    j = np.array([index[b] for _, b in edges], dtype=np.int64)
    best: dict[str, float] = {}
    for (a, b), score in edges.items():
        for content in (a, b):
            if not np.isnan(score):
                best[content] = max(best.get(content, -1.0), score)
    for members in components(len(contents.hashes), i, j):
        plans.append(GroupPlan("near", [(image_id, best.get(contents.hashes[m]))
                                        for m in members for image_id in contents.images[contents.hashes[m]]]))
    return plans


@dataclass
class RegroupReport:
    """What `regroup` did: the groups it stored, and how much it verified."""

    plans: list[GroupPlan] = field(default_factory=list)
    candidates: int = 0  # candidate pairs of distinct contents
    verified_now: int = 0  # of which verified on the pixels now
    unreadable: list[str] = field(default_factory=list)  # files the verifier could not read

    def __len__(self) -> int:
        return len(self.plans)


def regroup(conn: Connection, dataset_id: int, *, verify: bool = True,
            progress: ProgressFactory = silent) -> RegroupReport:
    """Replace the dataset's groups, in the caller's transaction (ingest calls it as it writes, so images and
    their groups land together). With VERIFY, candidate pairs not yet judged are verified on the pixels first
    and their verdicts kept; without, the groups are rebuilt from the verdicts and decisions already stored
    (what a steward's decision needs: no file is read)."""
    images = _hashed_images(conn, dataset_id)
    contents = Contents.of(images)
    report = RegroupReport()
    if verify:
        candidates = candidate_pairs(contents)
        known = known_verdicts(conn, candidates, METHOD)
        todo = sorted(candidates - known.keys())
        report.candidates, report.verified_now = len(candidates), len(todo)
        if todo:
            root = dataset_root(conn, dataset_id)
            path_of = {image.content_hash: image.path for image in contents.first}
            with progress(len(todo), "verifying candidate pairs") as advance:
                verdicts, report.unreadable = verify_candidates(todo, path_of, lambda p: read_regular(root / p),
                                                                advance)
            save_verdicts(conn, verdicts, METHOD)
    confirmed = confirmed_among(conn, contents.hashes, METHOD)
    decisions = steward_decisions(conn, {image.image_id: image.content_hash for image in images})
    report.plans = plan_groups(contents, confirmed, decisions)
    replace_groups(conn, dataset_id, report.plans, method={"exact": EXACT_METHOD, "near": METHOD},
                   threshold={"exact": 0.0, "near": MIN_SCORE})
    return report


def _hashed_images(conn: Connection, dataset_id: int) -> list[HashedImage]:
    rows = conn.execute(select(Image.id, Image.path, Image.content_hash, Image.near_hash, Image.picture_signature)
                        .where(Image.dataset_id == dataset_id, Image.content_hash.is_not(None),
                               Image.near_hash.is_not(None))).all()
    return [HashedImage(image_id, path, content, near, signature) for image_id, path, content, near, signature in rows
            if content is not None and near is not None]  # as the query asks: said again for the type checker


@dataclass
class DuplicatesResult(Result):
    dataset: str
    images: int
    hashed_now: int  # images read now because an older ingest stored no hash or signature
    unreadable: list[str]  # files that could not be read (left out of the groups)
    exact_groups: int
    exact_redundant: int  # images beyond the first of each exact group
    near_groups: int
    near_images: int
    candidates: int  # candidate pairs of distinct pictures
    verified_now: int  # of which verified on the pixels now (the others were judged before)
    threshold: float  # the score a verified pair reaches to join
    method: str


def compute_duplicates(engine: Engine, dataset: str, *, progress: ProgressFactory = silent) -> DuplicatesResult:
    """Hash what has no hash or signature yet, verify the candidate pairs not yet judged, then replace the
    dataset's duplicate groups."""
    with engine.connect() as conn:
        dataset_id = dataset_id_of(conn, dataset)
        root = dataset_root(conn, dataset_id)
        rows = conn.execute(select(Image.id, Image.path, Image.content_hash, Image.near_hash,
                                   Image.picture_signature.is_(None).label("unsigned"))
                            .where(Image.dataset_id == dataset_id).order_by(Image.id)).all()
    todo = [r for r in rows if r.content_hash is None or r.near_hash is None or r.unsigned]
    measured: dict[int, tuple[str, str, str, bytes]] = {}
    unreadable = []
    if todo:
        with progress(len(todo), "hashing images") as advance:
            checks = inspect_files(root, [r.path for r in todo], advance)
        for row, check in zip(todo, checks):
            if check.facts is None:
                unreadable.append(check.error)
            else:
                measured[row.id] = (check.facts.content_hash, check.facts.perceptual_hash, check.facts.near_hash,
                                    check.facts.picture_signature)
    with engine.begin() as conn:
        if measured:
            conn.execute(
                update(Image).where(Image.id == bindparam("b_id"))
                .values(content_hash=bindparam("b_hash"), perceptual_hash=bindparam("b_phash"),
                        near_hash=bindparam("b_near"), picture_signature=bindparam("b_signature"))
                .execution_options(synchronize_session=False),
                [{"b_id": k, "b_hash": c, "b_phash": p, "b_near": n, "b_signature": r}
                 for k, (c, p, n, r) in measured.items()],
            )
        report = regroup(conn, dataset_id, progress=progress)
    exact = [p for p in report.plans if p.kind == "exact"]
    near = [p for p in report.plans if p.kind == "near"]
    return DuplicatesResult(dataset, len(rows), len(measured), unreadable + report.unreadable, len(exact),
                            sum(len(p.members) - 1 for p in exact), len(near), sum(len(p.members) for p in near),
                            report.candidates, report.verified_now, MIN_SCORE, METHOD)


def list_groups(engine: Engine, dataset: str | None = None, limit: int = 50, offset: int = 0
                ) -> list[DuplicateGroupInfo]:
    """A page of stored groups, largest first."""
    with engine.connect() as conn:
        return list_duplicate_groups(conn, dataset, limit, offset)


def show_group(engine: Engine, group_id: int) -> DuplicateGroupInfo:
    """One stored group with its members."""
    with engine.connect() as conn:
        return get_duplicate_group(conn, group_id)


@dataclass
class Decision(Result):
    """A steward's decision on a group, and where its pictures stand once the groups are rebuilt."""

    review: ReviewRecord
    dataset: str
    group_now: int | None  # the near group holding the decision's first image now, if any
    groups: int  # the dataset's groups after the decision


def decide_group(engine: Engine, group_id: int, decision: str, *, note: str | None = None,
                 reviewer: str | None = None) -> Decision:
    """Record a steward's `duplicate confirmed` or `duplicate rejected` on near group GROUP_ID and rebuild the
    dataset's groups at once from the stored verdicts (no file is read). The decision is kept with the image
    ids it judged, so it holds through `duplicates compute` and re-ingest; the latest word on a pair stands."""
    with engine.connect() as conn:
        kind = conn.execute(select(DuplicateGroup.kind).where(DuplicateGroup.id == group_id)).scalar_one_or_none()
    record = review_group(engine, group_id, decision, note=note, reviewer=reviewer)
    members = record.members or []
    with engine.begin() as conn:
        dataset_id, dataset = conn.execute(select(Image.dataset_id, Dataset.name).join(Dataset)
                                           .where(Image.id == members[0])).one()
        if kind == "exact":  # identical bytes are one picture whatever is decided: recorded, nothing regrouped
            groups = conn.execute(select(func.count()).select_from(DuplicateGroup)
                                  .where(DuplicateGroup.dataset_id == dataset_id)).scalar_one()
            return Decision(record, dataset, group_id, groups)
        report = regroup(conn, dataset_id, verify=False)
        now = conn.execute(select(DuplicateMember.group_id).join(DuplicateGroup).where(
            DuplicateMember.image_id == members[0], DuplicateGroup.kind == "near")).scalar_one_or_none()
    return Decision(record, dataset, now, len(report))
