"""A labels CSV for DICOM studies, keyed by StudyInstanceUID or AccessionNumber, pseudonymised as it is read.

The file has a header naming its key column (`StudyInstanceUID` or `AccessionNumber`) and a `label` column
of 0/1 or words (normal, abnormal, ... and `--label-map`'s). Keys are turned into their keyed pseudonyms on
the line they are read, so the raw UIDs and accession numbers never reach a result, a message or a log.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from boneclf.errors import BonedbError, Problem

from .dicom_files import or_skip
from .dicom_identity import PseudonymKey
from .folder_dataset import DEFAULT_LABELS, _norm

KEY_COLUMNS = ("StudyInstanceUID", "AccessionNumber")


class LabelRow(NamedTuple):
    pseudonym: str  # of the StudyInstanceUID or the AccessionNumber, as `key_column` says
    label: int
    line: int


@dataclass
class StudyLabels:
    file: str
    key_column: str  # StudyInstanceUID or AccessionNumber
    sha256: str
    rows: list[LabelRow] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def read_labels(path: Path, key: PseudonymKey, label_map: dict[str, int] | None = None,
                skip_bad: bool = False) -> StudyLabels:
    """The CSV's rows, keys pseudonymised; bad rows are problems (never quoting the key's value), advising
    --skip-bad unless SKIP_BAD."""
    words = label_map or DEFAULT_LABELS
    try:
        data = Path(path).read_bytes()
        text = data.decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise BonedbError(f"--labels {path}: cannot read it as UTF-8 text ({exc}); nothing was written") from None
    reader = csv.reader(text.splitlines())
    header = [cell.strip() for cell in next(reader, [])]
    lowered = [cell.lower() for cell in header]
    keys = [name for name in KEY_COLUMNS if name.lower() in lowered]
    if len(keys) != 1 or "label" not in lowered:
        raise BonedbError(f"{path}:1: the header must name one key column ({' or '.join(KEY_COLUMNS)}) and a "
                          f"`label` column, e.g. `StudyInstanceUID,label`; nothing was written")
    key_at, label_at = lowered.index(keys[0].lower()), lowered.index("label")
    result = StudyLabels(str(path), keys[0], hashlib.sha256(data).hexdigest())
    seen: dict[str, LabelRow] = {}
    for line, row in enumerate(reader, start=2):
        if not any(cell.strip() for cell in row):
            continue
        value = row[key_at].strip() if key_at < len(row) else ""
        word = row[label_at].strip() if label_at < len(row) else ""
        label = words.get(_norm(word))
        if not value or label is None:
            what = f"no {keys[0]}" if not value else f"label {word!r} is not 0, 1 or a known word"
            result.problems.append(Problem(str(path), line, f"{what}: fix the row (words: --label-map "
                                           f"'broken=1,ok=0'){or_skip(skip_bad)}"))
            continue
        found = LabelRow(key.pseudonym(keys[0], value), label, line)
        earlier = seen.get(found.pseudonym)
        if earlier is not None and earlier.label != label:
            result.problems.append(Problem(str(path), line, f"the same study is labelled {earlier.label} on line "
                                           f"{earlier.line}: keep one label per study"))
            continue
        if earlier is None:
            seen[found.pseudonym] = found
            result.rows.append(found)
    return result
