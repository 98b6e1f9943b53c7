"""Verdicts on pairs of pictures, as stored: what `same_picture.verify_pair` found, and stewards' decisions.

A verdict is keyed by the two contents (sha256, the smaller first), not by image ids: the same two files
are the same two pictures in any dataset and after any re-ingest, so a pair is verified once. Stewards'
decisions live in `reviews` (store/reviews.py) with the image ids they judged; `steward_decisions`
turns them into contents for the grouping.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from sqlalchemy import Connection, delete, select, tuple_

from boneclf.clock import utc_now

from .bulk import insert_rows
from .reviews import DUPLICATE_DECISIONS
from .schema import PicturePair, Review

_pairs = PicturePair.__table__
_CHUNK = 400  # pairs or contents per IN (...) list

DUPLICATE_SAME, DUPLICATE_NOT = DUPLICATE_DECISIONS


class Evidence(Protocol):
    """What a verdict holds (same_picture.Verdict has it). Read-only, as a frozen Verdict's fields are."""

    @property
    def same(self) -> bool: ...
    @property
    def score(self) -> float: ...
    @property
    def inliers(self) -> int: ...
    @property
    def overlap(self) -> float: ...
    @property
    def angle(self) -> float: ...
    @property
    def scale(self) -> float: ...
    @property
    def flipped(self) -> bool: ...
    @property
    def dx(self) -> float: ...
    @property
    def dy(self) -> float: ...


def known_verdicts(conn: Connection, pairs: set[tuple[str, str]], method: str) -> dict[tuple[str, str], bool]:
    """Of PAIRS, those already verified by METHOD: pair -> same."""
    ordered = sorted(pairs)
    found: dict[tuple[str, str], bool] = {}
    for start in range(0, len(ordered), _CHUNK):
        rows = conn.execute(select(_pairs.c.content_a, _pairs.c.content_b, _pairs.c.same).where(
            _pairs.c.method == method,
            tuple_(_pairs.c.content_a, _pairs.c.content_b).in_(ordered[start:start + _CHUNK])))
        found.update({(a, b): bool(same) for a, b, same in rows})
    return found


def confirmed_among(conn: Connection, contents: Sequence[str], method: str) -> dict[tuple[str, str], float]:
    """Pairs of CONTENTS that METHOD found to be the same picture: pair -> score."""
    wanted = set(contents)
    ordered = sorted(wanted)
    found: dict[tuple[str, str], float] = {}
    for start in range(0, len(ordered), _CHUNK):
        rows = conn.execute(select(_pairs.c.content_a, _pairs.c.content_b, _pairs.c.score).where(
            _pairs.c.method == method, _pairs.c.same.is_(True), _pairs.c.content_a.in_(ordered[start:start + _CHUNK])))
        found.update({(a, b): float(score) for a, b, score in rows if b in wanted})
    return found


def save_verdicts(conn: Connection, verdicts: Mapping[tuple[str, str], Evidence], method: str) -> None:
    """Store VERDICTS (replacing any earlier ones on the same pairs)."""
    ordered = sorted(verdicts)
    for start in range(0, len(ordered), _CHUNK):
        conn.execute(delete(_pairs).where(
            tuple_(_pairs.c.content_a, _pairs.c.content_b).in_(ordered[start:start + _CHUNK])))
    now = utc_now()
    insert_rows(conn, _pairs, ("content_a", "content_b", "method", "same", "score", "inliers", "overlap", "angle",
                               "scale", "flipped", "dx", "dy", "examined_at"),
                [(a, b, method, bool(v.same), float(v.score), int(v.inliers), float(v.overlap), float(v.angle),
                  float(v.scale), bool(v.flipped), float(v.dx), float(v.dy), now)
                 for (a, b), v in ((pair, verdicts[pair]) for pair in ordered)])


def pair_evidence(conn: Connection, pairs: Sequence[tuple[str, str]]) -> dict[tuple[str, str], dict]:
    """The stored verdicts on PAIRS (each ordered, smaller content first), as dicts of their columns."""
    ordered = sorted(set(pairs))
    found: dict[tuple[str, str], dict] = {}
    for start in range(0, len(ordered), _CHUNK):
        rows = conn.execute(select(_pairs).where(
            tuple_(_pairs.c.content_a, _pairs.c.content_b).in_(ordered[start:start + _CHUNK])))
        found.update({(row.content_a, row.content_b): dict(row._mapping) for row in rows})
    return found


def steward_decisions(conn: Connection, content_of: Mapping[int, str]) -> list[tuple[bool, list[str]]]:
    """Stewards' duplicate decisions, oldest first, as (same?, the contents judged) for the images in
    CONTENT_OF (image id -> content); images no longer there are dropped from a decision."""
    rows = conn.execute(select(Review.decision, Review.members).where(
        Review.decision.in_((DUPLICATE_SAME, DUPLICATE_NOT))).order_by(Review.id))
    found = []
    for decision, members in rows:
        contents = sorted({content_of[m] for m in members or () if m in content_of})
        if len(contents) > 1:
            found.append((decision == DUPLICATE_SAME, contents))
    return found
