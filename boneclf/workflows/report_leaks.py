"""The report's lists of leaks and copies, as tables with thumbnails: what a steward looks at first.

Per split: patients, studies and duplicate groups found in more than one subset (leaks: a test
case the model may have seen in training), and duplicate groups with several members inside the
test subset (copies: not independent cases, which is why intervals rest on leak groups). The page
is static, so each list shows its first rows and says how many more there are and which command
lists them all. Nothing is hashed or computed here: duplicate groups are the stored ones
(`bonedb duplicates compute`, or ingest with `--verify`), exact copies without them come from the
stored content hashes.
"""

from __future__ import annotations

import base64
import io
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine

from boneclf.data.leakage import exact_duplicates, group_overlaps
from boneclf.store.duplicates import group_memberships
from boneclf.store.queries import SplitImage, dataset_facts, dataset_root, get_split, split_images

ROWS_SHOWN = 10  # per list: the report is static, the rest is counted
MEMBERS_SHOWN = 4  # thumbnails per row
THUMBNAIL = 64  # px, the longer side


@dataclass
class Thumbnail:
    caption: str  # subset: path
    data: str | None = None  # base64 PNG; None when the file could not be read


@dataclass
class LeakRow:
    kind: str  # patient, study, exact or near duplicate group, exact copies
    reference: str  # the patient or study key, or the group's id
    subsets: list[str]
    images: int
    thumbnails: list[Thumbnail] = field(default_factory=list)


@dataclass
class LeakList:
    anchor: str
    title: str
    rows: list[LeakRow]
    total: int  # rows there are; the list shows the first ROWS_SHOWN
    everything: str  # the command that lists them all
    what_it_lists: str = "lists them all"


def split_leaks(engine: Engine, split_name: str, shown: int = ROWS_SHOWN) -> list[LeakList]:
    """The leaks across the subsets of SPLIT_NAME and the copies inside its test subset, the first SHOWN
    rows of each with thumbnails."""
    with engine.connect() as conn:
        split = get_split(conn, split_name)
        root = dataset_root(conn, split.dataset_id)
        rows = split_images(conn, split.id)
        dataset = dataset_facts(conn, split.dataset_id).name
        memberships, kinds = {}, {}
        for kind in ("exact", "near"):
            groups = group_memberships(conn, split.dataset_id, kinds=(kind,))
            memberships.update(groups)
            kinds.update(dict.fromkeys(groups, kind))
    by_id = {r.image_id: r for r in rows}
    crossing, copies = [], []
    for group_id, members in sorted(memberships.items()):
        present = sorted((by_id[m] for m in members if m in by_id), key=lambda r: (r.subset, r.path))
        subsets = sorted({r.subset for r in present})
        kind = f"{kinds[group_id]} duplicate group"
        if len(subsets) > 1:
            crossing.append((kind, str(group_id), present))
        in_test = [r for r in present if r.subset == "test"]
        if len(in_test) > 1:
            copies.append((kind, str(group_id), in_test))
    if not memberships:  # groups never computed: identical files, from the stored content hashes
        crossing = _by_key(exact_duplicates((r.content_hash, r.subset, r.path) for r in rows), rows)
        copies = [("exact copies", key, [r for r in members if r.subset == "test"])
                  for key, members in _same_content(rows).items()
                  if sum(r.subset == "test" for r in members) > 1]
    overlaps = _by_key(group_overlaps([(r.patient, r.subset, r.path) for r in rows],
                                      [(r.study_id, r.subset, r.path) for r in rows]), rows)
    return [
        LeakList(f"leaks-{split.id}", "Leaks: patients, studies and duplicate pictures in more than one subset",
                 _shown(overlaps + crossing, root, shown), len(overlaps) + len(crossing),
                 f"bonedb audit split {_quoted(split_name)}"),
        LeakList(f"copies-{split.id}", "Copies inside the test subset (duplicate groups): not independent cases",
                 _shown(copies, root, shown), len(copies), f"bonedb duplicates list --dataset {_quoted(dataset)}",
                 "lists the dataset's duplicate groups"),
    ]


def _same_content(rows: list[SplitImage]) -> dict[str, list[SplitImage]]:
    found: dict[str, list[SplitImage]] = defaultdict(list)
    for r in rows:
        if r.content_hash:
            found[r.content_hash].append(r)
    return found


def _by_key(found: list[dict], rows: list[SplitImage]) -> list[tuple[str, str, list[SplitImage]]]:
    """data.leakage's crossings ({kind, key, paths: ["subset: path"]}) with their split rows."""
    at = {f"{r.subset}: {r.path}": r for r in rows}
    return [(item["kind"], item["key"], [at[p] for p in item["paths"] if p in at]) for item in found]


def _shown(entries: list[tuple[str, str, list[SplitImage]]], root: Path, count: int) -> list[LeakRow]:
    shown = []
    for kind, key, members in entries[:count]:
        thumbnails = [Thumbnail(f"{r.subset}: {r.path}", _thumbnail(root / r.path)) for r in members[:MEMBERS_SHOWN]]
        shown.append(LeakRow(kind, key, sorted({r.subset for r in members}), len(members), thumbnails))
    return shown


def _thumbnail(path: Path) -> str | None:
    from PIL import Image

    try:
        with Image.open(path) as opened:
            picture = opened.convert("L")
        picture.thumbnail((THUMBNAIL, THUMBNAIL))
        buffer = io.BytesIO()
        picture.save(buffer, "PNG")
    except (OSError, ValueError):
        return None
    return base64.b64encode(buffer.getvalue()).decode()


def _quoted(text: str) -> str:
    return text if text.replace("-", "").replace("_", "").replace(".", "").isalnum() else f"'{text}'"
