"""MURA's seven body parts, and parsing of `--parts` lists."""

from __future__ import annotations

from .errors import BonedbError

BODY_PARTS: tuple[str, ...] = (
    "elbow",
    "finger",
    "forearm",
    "hand",
    "humerus",
    "shoulder",
    "wrist",
)

SOURCE_SPLITS: tuple[str, ...] = ("train", "valid")

# The part of a folder dataset ingested without --part: one region, not named. It can be split,
# exported, trained (stage 2) and evaluated like any part; stage 1 has nothing to tell apart.
UNKNOWN_PART = "unknown"


def parse_parts(text: str | None) -> tuple[str, ...]:
    """`"humerus,shoulder"` -> ("humerus", "shoulder"); None or "all" -> all seven."""
    if text is None or text.strip().lower() in ("", "all"):
        return BODY_PARTS
    parts = []
    for raw in text.split(","):
        part = raw.strip().lower()
        if part not in BODY_PARTS and part != UNKNOWN_PART:
            raise BonedbError(
                f"unknown body part {raw.strip()!r}: choose from {', '.join(BODY_PARTS)} "
                f"(or {UNKNOWN_PART}, a folder dataset ingested without --part)"
            )
        if part not in parts:
            parts.append(part)
    return tuple(sorted(parts))
