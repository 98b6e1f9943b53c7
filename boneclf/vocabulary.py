"""bonedb's vocabulary, once: MURA's body parts, the two training stages, the label's words.

Everything that names a stage, a label or a class imports it from here, so a word cannot drift
between the CLI, the store, the trainer, the report and the web pages.
"""

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

# The two stages of the seed paper: stage 1 tells the body part, stage 2 normal from abnormal.
BODYPART = "bodypart"
FRACTURE = "fracture"
STAGES: tuple[str, ...] = (BODYPART, FRACTURE)

# MURA labels studies 0 (normal) or 1 (abnormal: fracture, hardware, degenerative change, ...).
LABEL_WORDS: dict[int, str] = {0: "normal", 1: "abnormal"}
# Stage 2's class names, indexed by the label.
FRACTURE_CLASSES: list[str] = [LABEL_WORDS[0], LABEL_WORDS[1]]
# Folder names of an exported class tree, indexed by the label (the seed paper's words).
EXPORT_CLASS_FOLDERS: dict[int, str] = {0: "normal", 1: "fractured"}


def label_word(label: int) -> str:
    """0 -> "normal", 1 -> "abnormal"."""
    return LABEL_WORDS[int(label)]


def stage_title(stage: str) -> str:
    """How people read a stage: "body part (stage 1)" or "normal or abnormal (stage 2)"."""
    return "body part (stage 1)" if stage == BODYPART else "normal or abnormal (stage 2)"

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
