"""Leak groups: the images a split must keep in one subset, whatever else it does.

A leak group is the union (union-find) of everything that ties images together: one patient
across body parts, one duplicate group (exact copies, flipped, rotated or re-encoded copies of a
picture), and a user's own group id (from a CSV, or read out of the file name by a pattern).
Splits assign whole groups; bootstrap intervals resample whole groups.
"""

from __future__ import annotations

import csv
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

from boneclf.errors import BonedbError

GROUP_BY = ("patient", "duplicates", "both")


class UnionFind:
    """Disjoint sets over hashable items, with path halving; `root` of an unseen item is the item."""

    def __init__(self) -> None:
        self.parent: dict = {}

    def root(self, item):
        parent = self.parent
        while parent.get(item, item) != item:
            parent[item] = parent.get(parent[item], parent[item])
            item = parent[item]
        return item

    def union(self, items: Iterable) -> None:
        iterator = iter(items)
        first = next(iterator, None)
        if first is None:
            return
        keep = self.root(first)
        for item in iterator:
            other = self.root(item)
            if other != keep:
                # The smaller root wins, so that the result does not depend on the order of unions.
                keep, other = min(keep, other), max(keep, other)
                self.parent[other] = keep


def read_group_csv(path: str, known_paths: set[str]) -> dict[str, str]:
    """image path -> group id from a CSV with `path` and `group` columns (paths relative to the dataset root)."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise BonedbError(f"--groups-from {path}: cannot read it ({exc.strerror})") from None
    reader = csv.DictReader(text.splitlines())
    if not reader.fieldnames or not {"path", "group"} <= set(reader.fieldnames):
        raise BonedbError(f"{path}:1: needs a header with `path` and `group` columns "
                          f"(found {', '.join(reader.fieldnames or []) or 'none'})")
    groups: dict[str, str] = {}
    for line, row in enumerate(reader, start=2):
        image, group = (row.get("path") or "").strip(), (row.get("group") or "").strip()
        if not image or not group:
            raise BonedbError(f"{path}:{line}: empty path or group")
        if image not in known_paths:
            raise BonedbError(f"{path}:{line}: {image!r} is not an image of the dataset (paths are relative to "
                              "its root, as `bonedb split show` and exports name them)")
        groups[image] = group
    return groups


def groups_from_pattern(pattern: str, paths: Sequence[str]) -> dict[str, str]:
    """image path -> group id: the first capture group (or the whole match) of PATTERN searched in the
    file name; every image must match."""
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise BonedbError(f"--group-pattern {pattern!r} is not a regular expression: {exc}") from None
    groups, unmatched = {}, []
    for path in paths:
        found = compiled.search(path.rsplit("/", 1)[-1])
        if found is None:
            unmatched.append(path)
        else:
            groups[path] = found.group(1) if compiled.groups else found.group(0)
    if unmatched:
        raise BonedbError(f"--group-pattern {pattern!r} matches no group id in {len(unmatched)} file name(s), "
                          f"e.g. {unmatched[0]}: fix the pattern (it is searched in the file name)")
    return groups


def leak_groups(records: Sequence, *, group_by: str, duplicate_groups: Iterable[Iterable[int]] = (),
                user_groups: dict[str, str] | None = None) -> dict[int, str]:
    """image id -> leak-group key for RECORDS (splits.Record). The key is the smallest patient key in the
    group, so that a split grouped by patient alone is the same as before duplicate groups existed."""
    if group_by not in GROUP_BY:
        raise BonedbError(f"--group-by {group_by!r}: choose {', '.join(GROUP_BY)}")
    sets = UnionFind()
    if group_by in ("patient", "both"):
        by_patient: dict[str, list[int]] = defaultdict(list)
        for record in records:
            by_patient[record.patient].append(record.image_id)
        for same_patient in by_patient.values():
            sets.union(same_patient)
    ids = {record.image_id for record in records}
    if group_by in ("duplicates", "both"):
        for members in duplicate_groups:
            sets.union(m for m in members if m in ids)
    if user_groups:
        by_user: dict[str, list[int]] = defaultdict(list)
        for record in records:
            if record.path in user_groups:
                by_user[user_groups[record.path]].append(record.image_id)
        for members in by_user.values():
            sets.union(members)
    name: dict[int, str] = {}
    for record in records:
        root = sets.root(record.image_id)
        if root not in name or record.patient < name[root]:
            name[root] = record.patient
    keys = {record.image_id: name[sets.root(record.image_id)] for record in records}
    # Two groups that share their smallest patient key (possible when patients are split by
    # duplicates=only) stay apart: the root id breaks the tie.
    roots_per_key: dict[str, set] = defaultdict(set)
    for record in records:
        roots_per_key[keys[record.image_id]].add(sets.root(record.image_id))
    for record in records:
        if len(roots_per_key[keys[record.image_id]]) > 1:
            keys[record.image_id] = f"{keys[record.image_id]}#{sets.root(record.image_id)}"
    return keys
