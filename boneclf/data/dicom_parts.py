"""Which of MURA's seven body parts a DICOM image shows: BodyPartExamined, then the study's and the series'
descriptions, through a table of terms that `--parts-map FILE` extends. Anything else is `unknown`."""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import NamedTuple

from boneclf.errors import BonedbError, InputProblems, Problem
from boneclf.vocabulary import BODY_PARTS, UNKNOWN_PART

from .dicom_identity import code_or_none

# DICOM's defined terms for BodyPartExamined (PS3.16 Annex L) and the words descriptions use for MURA's
# parts. ARM is DICOM's upper arm; SCAPHOID films are wrist series.
DEFAULT_PART_TERMS: dict[str, str] = {
    "ELBOW": "elbow",
    "FINGER": "finger", "THUMB": "finger", "FINGERS": "finger",
    "FOREARM": "forearm", "LOWER ARM": "forearm",
    "HAND": "hand",
    "HUMERUS": "humerus", "UPPER ARM": "humerus", "ARM": "humerus",
    "SHOULDER": "shoulder",
    "WRIST": "wrist", "SCAPHOID": "wrist",
}

# Where the part is looked for, in order. The descriptions are free text: read here, never stored.
PART_SOURCES = ("BodyPartExamined", "StudyDescription", "SeriesDescription")


class PartFound(NamedTuple):
    part: str  # one of BODY_PARTS, or UNKNOWN_PART
    source: str | None  # the keyword it came from; None when unknown
    code: str  # BodyPartExamined as a code ("(none)" when absent): how an unknown is listed


def _normal(text: str) -> str:
    return re.sub(r"[\s_]+", " ", text.upper()).strip()


def find_part(ds, terms: dict[str, str]) -> PartFound:
    """The first source that names exactly one part wins; a description naming two (HAND AND WRIST) does not."""
    for keyword in PART_SOURCES:
        text = _normal(str(ds.get(keyword) or ""))
        if not text:
            continue
        if text in terms:
            parts = {terms[text]}
        else:
            parts = {part for term, part in terms.items() if re.search(rf"\b{re.escape(term)}\b", text)}
        parts.discard(UNKNOWN_PART)
        if len(parts) == 1:
            return PartFound(parts.pop(), keyword, _code(ds))
    return PartFound(UNKNOWN_PART, None, _code(ds))


def _code(ds) -> str:
    value = ds.get("BodyPartExamined")
    if value is None or not str(value).strip():
        return "(none)"
    return code_or_none(value) or "(not a code)"


def read_parts_map(path: Path | None) -> dict[str, str]:
    """DEFAULT_PART_TERMS extended by PATH: one `TERM,part` per line (`#` starts a comment); a part of
    `unknown` takes a default term out."""
    terms = dict(DEFAULT_PART_TERMS)
    if path is None:
        return terms
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise BonedbError(f"--parts-map {path}: cannot read it ({exc}); nothing was written") from None
    problems = []
    for number, row in enumerate(csv.reader(text.splitlines()), start=1):
        if not row or not row[0].strip() or row[0].lstrip().startswith("#"):
            continue
        if len(row) != 2 or row[1].strip().lower() not in (*BODY_PARTS, UNKNOWN_PART):
            problems.append(Problem(str(path), number, f"write TERM,PART with PART one of {', '.join(BODY_PARTS)} "
                                    f"or {UNKNOWN_PART}, e.g. `HANDX,hand`"))
            continue
        terms[_normal(row[0])] = row[1].strip().lower()
    if problems:
        raise InputProblems(problems, f"{len(problems)} problem(s) in {path}; nothing was written")
    return terms
