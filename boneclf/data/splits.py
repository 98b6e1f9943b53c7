"""Versioned, leak-group-level, stratified train/val/test splits, stored immutably in the database.

A split assigns whole leak groups (`leak_groups`): a patient *across body parts* (a patient with
humerus and shoulder studies lands in one subset) united with the dataset's duplicate groups
(copies, flips, rotations, re-encodings of one picture) and any user-supplied group id. It keeps
each (part, label) stratum's share close to the whole, and
depends only on the data, the options and the seed: the order patients are considered in comes
from a hash of (seed, patient id), never from row order or a platform's random generator.

A split pins its labels: each assignment keeps the label its image's study had when the split
was made, and the content hash covers (path, subset, label). Training and evaluation read the
pinned labels, so a relabel of the dataset never changes a split under a run; `rebase_split`
makes a new split with the same subsets and today's labels.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from typing import NamedTuple

from sqlalchemy import Connection, Engine, delete, distinct, func, insert, select

from boneclf.errors import BonedbError
from boneclf.results import Result, option_word, plural
from boneclf.store.bulk import insert_rows, paused_gc
from boneclf.store.duplicates import group_memberships
from boneclf.store.keys import inserted_id
from boneclf.store.locks import exclusive
from boneclf.store.provenance import LabelChanges, label_changes, label_version
from boneclf.store.queries import SplitRecord, dataset_id_of, get_split, split_images
from boneclf.store.runs import runs_using_split
from boneclf.store.schema import (
    Dataset,
    DuplicateGroup,
    DuplicateMember,
    Image,
    Patient,
    SplitAssignment,
    SplitOmission,
    SplitVersion,
    Study,
)

from .leak_groups import GROUP_BY, groups_from_pattern, leak_groups, read_group_csv
from .leakage import group_overlaps
from .names import check_name

SUBSETS = ("train", "val", "test")
TEST_FROM = ("official", "carve")
# Source splits that hold a dataset's own held-out images (MURA's valid; folder sets' val/test).
OFFICIAL_TEST = {"valid", "test"}

_versions = SplitVersion.__table__


@dataclass(frozen=True)
class SplitOptions:
    dataset: str
    parts: tuple[str, ...]
    val: float = 0.1
    test: float = 0.1
    seed: int = 42
    test_from: str = "official"
    group_by: str = "both"  # patient, duplicates or both: what ties images into one leak group
    groups_from: str | None = None  # a CSV of (path, group): the user's own group ids
    group_pattern: str | None = None  # a regular expression reading a group id out of each file name
    allow_leaks: bool = False  # store the split even if the audit finds leaks (recorded with it)
    dedupe: bool = False  # keep one image per exact-duplicate group (the others recorded as omitted)

    def validate(self) -> None:
        if self.group_by not in GROUP_BY:
            raise BonedbError(f"--group-by {self.group_by!r}: choose {', '.join(GROUP_BY)}")
        if self.test_from not in TEST_FROM:
            raise BonedbError(f"--test-from {self.test_from!r}: choose official or carve")
        if not (0 <= self.val < 1 and 0 <= self.test < 1 and self.val + self.test < 1):
            raise BonedbError(f"--val {self.val} and --test {self.test} must be fractions in [0, 1) summing below 1")

    def as_parameters(self) -> dict:
        """The options as stored with the split (and compared when the same name is created again)."""
        data = asdict(self)
        data["parts"] = sorted(self.parts)
        if self.test_from == "official":
            data["test"] = None  # the source's held-out images are the test set; no fraction applies
        # Options added with duplicate groups are stored only when not the default, so that a split
        # made before them compares equal when it is created again with the same options.
        for key, default in _STORED_IF_SET.items():
            if data[key] == default:
                del data[key]
        return data


_STORED_IF_SET = {"group_by": "both", "groups_from": None, "group_pattern": None, "allow_leaks": False,
                  "dedupe": False}


def describe_parameters(parameters: dict) -> str:
    """A split's stored options as "key value" pairs: "dataset mura-v1.1, parts elbow,hand, val 0.1"."""
    return ", ".join(f"{key.replace('_', '-')} {option_word(value)}" for key, value in sorted(parameters.items()))


def parameter_differences(there: dict, here: dict) -> str:
    """The options in which HERE (asked for) differs from THERE (stored): "val 0.1 there, 0.2 here"."""
    def value(options: dict, key: str):
        return options.get(key, _STORED_IF_SET.get(key))  # left out when stored: the default

    return "; ".join(f"{key.replace('_', '-')} {option_word(value(there, key))} there, "
                     f"{option_word(value(here, key))} here"
                     for key in sorted(there.keys() | here.keys()) if value(there, key) != value(here, key))


class Record(NamedTuple):
    image_id: int
    path: str
    patient: str
    study_id: int
    part: str
    label: int  # the study's label when the split is made: the one it pins
    source_split: str


@dataclass
class SplitResult(Result):
    name: str
    created: bool
    content_hash: str
    images: int
    note: str | None = None
    rebased_from: str | None = None
    changes: LabelChanges | None = None  # re-based: what differs from the split it came from
    leaks: dict[str, int] = field(default_factory=dict)  # the audit when stored: crossings by kind
    omitted: int = 0  # --dedupe: identical copies left out, each recorded with the copy kept
    groups: int = 0  # leak groups assigned
    largest_group: int = 0  # images in the largest leak group
    fractions: dict[str, float] = field(default_factory=dict)  # share of images per subset, as made
    warnings: list[str] = field(default_factory=list)  # groups too large for the requested fractions


def load_records(conn: Connection, dataset_id: int, parts) -> list[Record]:
    """The labelled images of PARTS: a study without a label yet (a DICOM study the CSV did not name) is left out."""
    rows = conn.execute(
        select(Image.id, Image.path, Patient.patient_key, Study.id, Study.body_part, Study.label, Study.source_split)
        .join(Study, Study.id == Image.study_id)
        .join(Patient, Patient.id == Study.patient_id)
        .where(Image.dataset_id == dataset_id, Study.body_part.in_(list(parts)), Study.label.is_not(None))
    )
    return sorted((_record(*row) for row in rows), key=lambda r: r.path)


def _record(image_id: int, path: str, patient: str, study_id: int, part: str, label: int | None,
            source_split: str) -> Record:
    """An image of a labelled study: the queries select only those (a split pins each image's label)."""
    if label is None:
        raise BonedbError(f"image {image_id} ({path}): its study has no label, so no split can hold it")
    return Record(image_id, path, patient, study_id, part, label, source_split)


def assign(records: list[Record], options: SplitOptions, groups: dict[int, str] | None = None,
           crossing_duplicates: Sequence[int] = ()) -> dict[int, str]:
    """image id -> subset, whole leak groups (GROUPS: image id -> group key; default: the patient) at a
    time. Pure and deterministic. CROSSING_DUPLICATES: stored duplicate groups in both the source's held-out
    and training images, named when the official test set is refused."""
    options.validate()
    if groups is None:
        groups = {r.image_id: r.patient for r in records}
    if options.test_from == "official":
        held_out = [r for r in records if r.source_split in OFFICIAL_TEST]
        if not held_out:
            raise BonedbError(
                f"dataset {options.dataset!r} has no held-out images (MURA's valid split) for these parts: "
                "ingest them, or carve a test set from the rest with --test-from carve"
            )
        pool = [r for r in records if r.source_split not in OFFICIAL_TEST]
        crossing = sorted({groups[r.image_id] for r in held_out} & {groups[r.image_id] for r in pool})
        if crossing and not options.allow_leaks:
            example = (f"duplicate group {crossing_duplicates[0]}: `bonedb duplicates show {crossing_duplicates[0]}`"
                       if crossing_duplicates else f"the group with patient {crossing[0]}")
            raise BonedbError(
                f"{plural(len(crossing), 'leak group')} (patients united with copies of one picture, e.g. "
                f"{example}) in both the source's held-out and training images, so its own "
                "test set leaks: use --test-from carve, which keeps each group in one subset; if a group is wrong, "
                "`bonedb duplicates list --dataset " + options.dataset + "` then `bonedb duplicates reject ID` "
                "unlinks it (or --allow-leaks keeps the source's test set as it is)"
            )
        assignment = {r.image_id: "test" for r in held_out}
        assignment.update(stratify_groups(pool, {"train": 1 - options.val, "val": options.val}, options.seed,
                                          groups))
        return assignment
    fractions = {"train": 1 - options.val - options.test, "val": options.val, "test": options.test}
    return stratify_groups(records, fractions, options.seed, groups)


def _held_out_crossing(records: list[Record], memberships: dict[int, list[int]]) -> list[int]:
    """Ids of duplicate groups with images both in the source's held-out set and outside it."""
    held_out = {r.image_id: r.source_split in OFFICIAL_TEST for r in records}
    return sorted(group_id for group_id, members in memberships.items()
                  if len({held_out[m] for m in members if m in held_out}) > 1)


def stratify_groups(records: list[Record], fractions: dict[str, float], seed: int,
                    groups: dict[int, str]) -> dict[int, str]:
    """Assign whole leak groups, largest first, each to the subset whose strata most lack its images.
    FRACTIONS names the subsets (train, val, test; or a label audit's folds), in order of preference on a tie."""
    subsets = [s for s in fractions if fractions[s] > 0]
    by_group: dict[str, list[Record]] = defaultdict(list)
    totals: dict[tuple, int] = defaultdict(int)
    for record in records:
        by_group[groups[record.image_id]].append(record)
        totals[(record.part, record.label)] += 1
    target = {s: {k: fractions[s] * n for k, n in totals.items()} for s in subsets}
    have: dict[str, defaultdict[tuple, float]] = {s: defaultdict(float) for s in subsets}

    def order(group: str) -> tuple:
        digest = hashlib.sha256(f"{seed}:{group}".encode()).hexdigest()
        return (-len(by_group[group]), digest)

    assignment: dict[int, str] = {}
    for group in sorted(by_group, key=order):
        images = by_group[group]
        counts: dict[tuple, int] = defaultdict(int)
        for record in images:
            counts[(record.part, record.label)] += 1

        def need(subset: str, counts=counts) -> tuple:
            score = sum(n * (target[subset][k] - have[subset][k]) / target[subset][k] for k, n in counts.items())
            return (score, fractions[subset], -subsets.index(subset))

        chosen = max(subsets, key=need)
        for k, n in counts.items():
            have[chosen][k] += n
        for record in images:
            assignment[record.image_id] = chosen
    return assignment


def assignment_hash(records: list[Record], assignment: dict[int, str]) -> str:
    """sha256 over sorted 'path<TAB>subset<TAB>label' lines (the label pinned): the same on every backend
    and machine, and different when only a label differs."""
    digest = hashlib.sha256()
    for record in sorted(records, key=lambda r: r.path):
        digest.update(f"{record.path}\t{assignment[record.image_id]}\t{record.label}\n".encode())
    return digest.hexdigest()


def create_split(engine: Engine, name: str, options: SplitOptions, kind: str = "bonedb") -> SplitResult:
    """Store a new split version; the same name and options again is a no-op, other options an error.
    No parts (an empty tuple) means every part the dataset has, `unknown` included."""
    options.validate()
    check_name("split", name, "split NAME")
    # One creator at a time: a second `split create` of the same name waits, then finds it made (a no-op).
    with paused_gc(), exclusive(engine, "split create"), engine.begin() as conn:
        dataset_id = dataset_id_of(conn, options.dataset)
        if not options.parts:
            options = replace(options, parts=dataset_parts(conn, dataset_id))
        records = load_records(conn, dataset_id, options.parts)
        if not records:
            have = ", ".join(dataset_parts(conn, dataset_id)) or "none"
            raise BonedbError(f"dataset {options.dataset!r} has no labelled images of {', '.join(options.parts)} "
                              f"(its parts: {have})")
        memberships = group_memberships(conn, dataset_id)
        duplicates = list(memberships.values())
        user_groups = _user_groups(options, records)  # before --dedupe: the CSV may name any image
        omissions: dict[int, int] = {}
        if options.dedupe:
            omissions = _dedupe(conn, dataset_id, records)
            records = [r for r in records if r.image_id not in omissions]
        groups = leak_groups(records, group_by=options.group_by, duplicate_groups=duplicates,
                             user_groups=user_groups)
        assignment = assign(records, options, groups, _held_out_crossing(records, memberships))
        content_hash = assignment_hash(records, assignment)
        existing = conn.execute(select(_versions).where(_versions.c.name == name)).first()
        if existing is not None and existing.kind != kind:
            raise BonedbError(f"split {name!r} already exists as a dataset's own ({existing.kind}) split: "
                              "choose another name")
        if existing is not None:
            return _existing(existing, name, options.as_parameters(), content_hash, conn)
        result = _store(conn, name, dataset_id, kind, options.as_parameters(), options.seed, records, assignment,
                        content_hash, refuse_leaks=not options.allow_leaks, duplicates=duplicates)
        if omissions:
            split_id: int = conn.execute(select(_versions.c.id).where(_versions.c.name == name)).scalar_one()
            insert_rows(conn, SplitOmission.__table__, ("split_id", "image_id", "kept_image_id"),
                        [(split_id, image_id, kept) for image_id, kept in sorted(omissions.items())])
    result.omitted = len(omissions)
    _describe_balance(result, records, assignment, groups, options)
    return result


def dataset_parts(conn: Connection, dataset_id: int) -> tuple[str, ...]:
    """The body parts a dataset has images of, sorted."""
    return tuple(sorted(conn.execute(
        select(Study.body_part).distinct().where(Study.dataset_id == dataset_id)).scalars()))


def _user_groups(options: SplitOptions, records: list[Record]) -> dict[str, str] | None:
    """path -> the user's group id, from --groups-from and/or --group-pattern (the CSV wins where both say)."""
    if not (options.groups_from or options.group_pattern):
        return None
    paths = [r.path for r in records]
    groups = groups_from_pattern(options.group_pattern, paths) if options.group_pattern else {}
    if options.groups_from:
        groups.update(read_group_csv(options.groups_from, set(paths)))
    return groups


def _dedupe(conn: Connection, dataset_id: int, records: list[Record]) -> dict[int, int]:
    """image id -> the image kept in its place: of each exact-duplicate group among RECORDS, the first by
    path stays. Copies whose labels disagree all stay (which copy is right is not for a split to decide)."""
    rows = conn.execute(
        select(DuplicateMember.group_id, DuplicateMember.image_id)
        .join(DuplicateGroup, DuplicateGroup.id == DuplicateMember.group_id)
        .where(DuplicateGroup.dataset_id == dataset_id, DuplicateGroup.kind == "exact")
    ).all()
    by_id = {r.image_id: r for r in records}
    members: dict[int, list[Record]] = defaultdict(list)
    for group_id, image_id in rows:
        if image_id in by_id:
            members[group_id].append(by_id[image_id])
    omitted = {}
    for copies in members.values():
        if len(copies) < 2 or len({r.label for r in copies}) > 1:
            continue
        kept, *rest = sorted(copies, key=lambda r: r.path)
        omitted.update({r.image_id: kept.image_id for r in rest})
    return omitted


def _describe_balance(result: SplitResult, records: list[Record], assignment: dict[int, str],
                      groups: dict[int, str], options: SplitOptions) -> None:
    """Fill in the shares as made, and a warning for each subset whose share a too-large group pushed
    more than 2 points away from the request."""
    total = len(records)
    sizes: dict[str, int] = defaultdict(int)
    for key in groups.values():
        sizes[key] += 1
    result.groups, result.largest_group = len(sizes), max(sizes.values(), default=0)
    made: dict[str, int] = defaultdict(int)
    for subset in assignment.values():
        made[subset] += 1
    result.fractions = {s: round(made[s] / total, 4) for s in SUBSETS if made[s] or s != "test"}
    if options.test_from == "official":
        return
    asked = {"train": 1 - options.val - options.test, "val": options.val, "test": options.test}
    for subset, want in asked.items():
        got = made[subset] / total
        if abs(got - want) > 0.02:
            biggest = max(sizes, key=lambda k: sizes[k])
            result.warnings.append(
                f"{subset} holds {got:.1%} of the images, asked {want:.1%} ({got - want:+.1%}): leak groups are "
                f"too coarse; the largest (the one with patient {biggest.split('#')[0]}) holds {sizes[biggest]} "
                f"images, {sizes[biggest] / total:.1%} of the split")


def rebase_split(engine: Engine, name: str, source: str) -> SplitResult:
    """A new split NAME with exactly the subsets of split SOURCE and today's labels: how a steward
    "re-bases" after a relabel. Images removed from the dataset since SOURCE was made are left out."""
    if name == source:
        raise BonedbError(f"split {source!r} cannot be re-based onto itself: name the new split")
    check_name("split", name, "split NAME")
    with paused_gc(), exclusive(engine, "split create"), engine.begin() as conn:
        old = get_split(conn, source)
        rows = conn.execute(
            select(Image.id, Image.path, Patient.patient_key, Study.id, Study.body_part, Study.label,
                   Study.source_split, SplitAssignment.subset)
            .select_from(SplitAssignment)
            .join(Image, Image.id == SplitAssignment.image_id)
            .join(Study, Study.id == Image.study_id)
            .join(Patient, Patient.id == Study.patient_id)
            .where(SplitAssignment.split_id == old.id)
        ).all()
        if not rows:
            raise BonedbError(f"split {source!r} has no images left in its dataset: nothing to re-base")
        records = sorted((_record(*row[:7]) for row in rows), key=lambda r: r.path)
        assignment = {row[0]: row[7] for row in rows}
        parameters = {"from": source, "from_hash": old.content_hash, "from_parameters": old.parameters}
        content_hash = assignment_hash(records, assignment)
        changes = label_changes(conn, old)
        existing = conn.execute(select(_versions).where(_versions.c.name == name)).first()
        if existing is not None:
            result = _existing(existing, name, parameters, content_hash, conn)
        else:
            # A re-base keeps the old split's subsets and changes only labels: it adds no leak, so it is never
            # refused for one (groups computed since, or a dataset's own leaky split); the leaks are recorded.
            result = _store(conn, name, old.dataset_id, "bonedb", parameters, old.seed, records, assignment,
                            content_hash, refuse_leaks=False)
    result.rebased_from, result.changes = source, changes
    return result


def store_assignment(
    conn: Connection, name: str, dataset_id: int, kind: str, parameters: dict, seed: int | None,
    records: list[Record], assignment: dict[int, str], refuse_leaks: bool = True,
) -> SplitResult:
    """Store an assignment made elsewhere (a folder dataset's own subsets). A source's own split is
    kept even when it leaks (refuse_leaks=False), so that `bonedb audit` can show the leak."""
    return _store(conn, name, dataset_id, kind, parameters, seed, records, assignment,
                  assignment_hash(records, assignment), refuse_leaks)


def _store(conn, name, dataset_id, kind, parameters, seed, records, assignment, content_hash,
           refuse_leaks: bool = True, duplicates: list | None = None) -> SplitResult:
    if duplicates is None:
        memberships = group_memberships(conn, dataset_id)
        duplicates = list(memberships.values())
    leaks = _leak_counts(conn, records, assignment, duplicates)
    if leaks and refuse_leaks:
        found = ", ".join(plural(n, _SINGULARS.get(kind, kind), kind) for kind, n in leaks.items())
        remedy = ("--group-by both (the default) keeps each duplicate group in one subset"
                  if parameters.get("group_by") in ("patient",) and "duplicate groups" in leaks else
                  "--test-from carve keeps each group in one subset" if parameters.get("test_from") == "official"
                  else "`bonedb split create --allow-leaks` stores it anyway, with the leaks recorded")
        raise BonedbError(f"split {name!r} would leak ({found} across subsets); nothing was stored: {remedy}")
    split_id = inserted_id(conn.execute(
        insert(_versions).values(
            name=name, dataset_id=dataset_id, kind=kind, parameters=parameters, seed=seed,
            content_hash=content_hash, images=len(records), label_version=label_version(conn, dataset_id),
            leaks=leaks,
        )
    ))
    insert_rows(conn, SplitAssignment.__table__, ("split_id", "image_id", "subset", "label"),
                [(split_id, r.image_id, assignment[r.image_id], r.label) for r in records])
    return SplitResult(name, True, content_hash, len(records), leaks=leaks)


_KIND_PLURALS = {"patient": "patients", "study": "studies"}
_SINGULARS = {"patients": "patient", "studies": "study", "identical files": "identical file",
              "duplicate groups": "duplicate group"}


def _leak_counts(conn, records: list[Record], assignment: dict[int, str], duplicates: list) -> dict[str, int]:
    """What `bonedb audit split` would find crossing subsets, counted by kind: patients, studies and stored
    duplicate groups (exact groups, which the audit lists as identical files, and near groups). Empty: no leak."""
    overlaps = group_overlaps(
        [(r.patient, assignment[r.image_id], r.path) for r in records],
        [(r.study_id, assignment[r.image_id], r.path) for r in records],
    )
    counts: dict[str, int] = defaultdict(int)
    for overlap in overlaps:
        counts[_KIND_PLURALS[overlap["kind"]]] += 1
    for members in duplicates:
        subsets = {assignment[m] for m in members if m in assignment}
        if len(subsets) > 1:
            counts["duplicate groups"] += 1
    return dict(counts)


def _existing(existing, name, parameters: dict, content_hash: str, conn) -> SplitResult:
    if existing.parameters != parameters:
        # Options that differ only in how a default was stored name no difference: then show what is stored.
        differences = (parameter_differences(existing.parameters, parameters)
                       or f"stored: {describe_parameters(existing.parameters)}")
        raise BonedbError(
            f"split {name!r} already exists with other options ({differences}); splits are immutable: "
            "choose another name, or `bonedb split delete` it first"
        )
    images = conn.execute(
        select(func.count()).select_from(SplitAssignment).where(SplitAssignment.split_id == existing.id)
    ).scalar_one()
    note = None
    if existing.content_hash != content_hash:
        note = (f"the data or its labels changed since split {name!r} was made; the stored split is kept as it "
                "was (create a new name to include the new data, or re-base it with --from)")
    return SplitResult(name, False, existing.content_hash, images, note)


@dataclass
class SplitInfo(Result):
    name: str
    dataset: str
    kind: str
    seed: int | None
    images: int
    content_hash: str
    created_at: datetime
    parameters: dict
    label_version: int | None


def list_splits(engine: Engine) -> list[SplitInfo]:
    query = (
        select(
            SplitVersion.name, Dataset.name.label("dataset"), SplitVersion.kind, SplitVersion.seed,
            func.count(SplitAssignment.image_id).label("images"), SplitVersion.content_hash,
            SplitVersion.created_at, SplitVersion.parameters, SplitVersion.label_version,
        )
        .join(Dataset, Dataset.id == SplitVersion.dataset_id)
        .outerjoin(SplitAssignment, SplitAssignment.split_id == SplitVersion.id)
        .group_by(SplitVersion.id, SplitVersion.name, Dataset.name, SplitVersion.kind, SplitVersion.seed,
                  SplitVersion.created_at, SplitVersion.content_hash, SplitVersion.label_version)
        .order_by(SplitVersion.name)
    )
    with engine.connect() as conn:
        return [SplitInfo(**row._mapping) for row in conn.execute(query)]


class SubsetCount(NamedTuple):
    subset: str
    part: str
    label: int
    images: int
    studies: int
    patients: int


@dataclass
class SplitSummary(Result):
    name: str
    dataset: str
    kind: str
    seed: int | None
    parameters: dict
    content_hash: str
    created_at: datetime
    counts: list[SubsetCount]  # by the labels the split pinned
    label_version: int | None = None
    label_changes: LabelChanges | None = None
    leaks: dict[str, int] | None = None  # the audit when stored ({}: none; None: made before audits were kept)
    omitted: int = 0  # images --dedupe left out

    def audit_line(self) -> str:
        """What the audit stored with the split found, in one line: `split show` and the split page say it."""
        if self.leaks is None:
            return "not recorded (made before audits were stored; `bonedb audit split` checks it)"
        if self.leaks:
            return ("LEAKS " + ", ".join(f"{n} {k}" for k, n in self.leaks.items())
                    + f" across subsets (`bonedb audit split {self.name}` lists them)")
        return "no patient, study or duplicate group crosses subsets"


def split_summary(engine: Engine, name: str) -> SplitSummary:
    """The split's record, its counts per subset x part x pinned label, and what changed since."""
    with engine.connect() as conn:
        split = get_split(conn, name)
        rows = conn.execute(
            select(
                SplitAssignment.subset, Study.body_part, SplitAssignment.label,
                func.count(Image.id), func.count(distinct(Study.id)), func.count(distinct(Study.patient_id)),
            )
            .join(Image, Image.id == SplitAssignment.image_id)
            .join(Study, Study.id == Image.study_id)
            .where(SplitAssignment.split_id == split.id)
            .group_by(SplitAssignment.subset, Study.body_part, SplitAssignment.label)
        ).all()
        dataset = conn.execute(select(Dataset.name).where(Dataset.id == split.dataset_id)).scalar_one()
        changes = label_changes(conn, split)
        omitted = conn.execute(select(func.count()).select_from(SplitOmission)
                               .where(SplitOmission.split_id == split.id)).scalar_one()
    counts = sorted((SubsetCount(*r) for r in rows), key=lambda r: (SUBSETS.index(r.subset), r.part, r.label))
    return SplitSummary(split.name, dataset, split.kind, split.seed, split.parameters, split.content_hash,
                        split.created_at, counts, split.label_version, changes, split.leaks, omitted)


def split_image_paths(engine: Engine, name: str) -> dict[str, list[str]]:
    """subset -> sorted image paths of split NAME."""
    with engine.connect() as conn:
        images = split_images(conn, get_split(conn, name).id)
    result: dict[str, list[str]] = defaultdict(list)
    for image in images:
        result[image.subset].append(image.path)
    return {subset: sorted(paths) for subset, paths in result.items()}


def delete_split(engine: Engine, name: str, *, confirm: Callable[[str], bool] | None = None) -> None:
    """Delete split NAME, once `confirm(what)` agrees (asked outside any transaction); refused while runs use it."""
    if confirm is not None:
        with engine.connect() as conn:
            _refuse_if_trained(conn, get_split(conn, name))
        if not confirm(f"delete split {name!r} (its image assignments; the images stay)"):
            raise BonedbError("not confirmed: nothing was deleted")
    with engine.begin() as conn:
        split = get_split(conn, name)
        _refuse_if_trained(conn, split)
        conn.execute(delete(SplitAssignment.__table__).where(SplitAssignment.split_id == split.id))
        conn.execute(delete(_versions).where(_versions.c.id == split.id))


def _refuse_if_trained(conn: Connection, split: SplitRecord) -> None:
    used = runs_using_split(conn, split.id)
    if used:
        raise BonedbError(f"split {split.name!r} trained run(s) {', '.join(map(str, used))}: it cannot be deleted "
                          f"while they exist (`bonedb runs delete {' '.join(map(str, used))}` deletes them)")
