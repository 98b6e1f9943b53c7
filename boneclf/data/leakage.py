"""Finding leaks between subsets: shared patients or studies, and identical files.

Pure functions over plain tuples, so that split creation and `bonedb audit` use the same code. Whether two
different files are the same picture is not judged here: that is the duplicate groups' one judgement
(`duplicates`, `same_picture`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable


def _crossing(rows: Iterable[tuple], kind: str) -> list[dict]:
    subsets: dict = defaultdict(set)
    paths: dict = defaultdict(list)
    for key, subset, path in rows:
        subsets[key].add(subset)
        paths[key].append((subset, path))
    found = []
    for key in sorted(subsets, key=str):
        if len(subsets[key]) > 1:
            found.append({
                "kind": kind, "key": str(key), "subsets": sorted(subsets[key]),
                "paths": [f"{subset}: {path}" for subset, path in sorted(paths[key])],
            })
    return found


def group_overlaps(patient_rows: Iterable[tuple], study_rows: Iterable[tuple]) -> list[dict]:
    """Patients and studies found in more than one subset; rows are (key, subset, path)."""
    return _crossing(patient_rows, "patient") + _crossing(study_rows, "study")


def exact_duplicates(rows: Iterable[tuple]) -> list[dict]:
    """Identical files (same content hash) in more than one subset; rows are (hash, subset, path)."""
    return _crossing(((h, s, p) for h, s, p in rows if h), "exact duplicate")
