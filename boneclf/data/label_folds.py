"""The folds of a label audit: every labelled study of a dataset's parts in exactly one fold, whole leak groups
at a time (patients across parts united with duplicate groups, as splits make them).

Fold k's split (`audit-<id>-fold-<k>`) holds fold k as its test subset, the studies its model scores, and
the other folds as train and val. So no study is scored by a model that saw it, a copy of it or its patient;
and each fold's model is an ordinary run on an ordinary stored split, pinned to today's labels.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine, select

from boneclf.errors import BonedbError
from boneclf.store.bulk import paused_gc
from boneclf.store.duplicates import group_memberships
from boneclf.store.locks import exclusive
from boneclf.store.queries import get_split
from boneclf.store.schema import SplitVersion

from .leak_groups import leak_groups
from .splits import Record, load_records, store_assignment, stratify_groups

VAL_FRACTION = 0.15  # of the other folds, to stop training early and report a validation score


@dataclass(frozen=True)
class FoldSplit:
    fold: int
    name: str
    split_id: int
    test_images: int


def fold_split_name(audit_id: int, fold: int) -> str:
    return f"audit-{audit_id}-fold-{fold}"


def plan_folds(records: list[Record], groups: dict[int, str], folds: int, seed: int) -> list[dict[int, str]]:
    """Per fold, image id -> train, val or test; test is the fold. Pure and deterministic, like a split."""
    if folds < 2:
        raise BonedbError(f"--folds {folds}: at least 2 (each study is scored by a model trained on the others)")
    if len(set(groups.values())) < folds:
        raise BonedbError(f"{len(set(groups.values()))} leak group(s) cannot make {folds} folds: use fewer --folds")
    names = [f"fold{k}" for k in range(folds)]
    fold_of = stratify_groups(records, {name: 1 / folds for name in names}, seed, groups)
    plans = []
    for k, name in enumerate(names):
        rest = [r for r in records if fold_of[r.image_id] != name]
        assignment = {r.image_id: "test" for r in records if fold_of[r.image_id] == name}
        assignment.update(stratify_groups(rest, {"train": 1 - VAL_FRACTION, "val": VAL_FRACTION}, seed + k, groups))
        plans.append(assignment)
    return plans


def make_fold_splits(engine: Engine, audit_id: int, dataset_id: int, parts: list[str], folds: int,
                     seed: int) -> list[FoldSplit]:
    """The audit's fold splits, made once: those already stored (an audit continued) are kept as they are."""
    with paused_gc(), exclusive(engine, "split create"), engine.begin() as conn:
        records = load_records(conn, dataset_id, parts)
        if not records:
            raise BonedbError(f"no labelled images of {', '.join(parts)} to audit")
        duplicates = list(group_memberships(conn, dataset_id).values())
        groups = leak_groups(records, group_by="both", duplicate_groups=duplicates)
        plans = plan_folds(records, groups, folds, seed)
        made = []
        for k, assignment in enumerate(plans):
            name = fold_split_name(audit_id, k)
            parameters = {"label_audit": audit_id, "fold": k, "folds": folds, "parts": parts, "seed": seed}
            stored = conn.execute(select(SplitVersion.parameters).where(SplitVersion.name == name)).first()
            if stored is not None and stored.parameters != parameters:
                raise BonedbError(f"split {name!r} exists and is not fold {k} of label audit {audit_id}: rename or "
                                  "delete it (`bonedb split delete`)")
            if stored is None:
                # refuse_leaks: the leak audit every split passes proves no leak group is on both sides.
                store_assignment(conn, name, dataset_id, "bonedb", parameters, seed, records, assignment,
                                 refuse_leaks=True)
            made.append(FoldSplit(k, name, get_split(conn, name).id, sum(s == "test" for s in assignment.values())))
    return made
