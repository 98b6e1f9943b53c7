"""`bonedb labels suspects`: train one model per fold, score each study with the model that never saw it,
and rank the studies with cleanlab, most likely mislabelled first.

Each fold's model is an ordinary run (stage 2, one model over the audited parts) on an ordinary split
(boneclf.data.label_folds), recorded like any `bonedb train`. Running the same audit again continues it:
finished folds are reused, an interrupted fold is resumed from its last epoch, missing folds are trained.
A study's out-of-fold probability is the mean of its images' probabilities, as evaluation scores studies.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field, replace

import numpy as np
from sqlalchemy import Engine, select

from boneclf.data.label_folds import FoldSplit, make_fold_splits
from boneclf.data.splits import dataset_parts
from boneclf.errors import BonedbError, Interrupted
from boneclf.progress import ProgressFactory, silent
from boneclf.results import Result
from boneclf.store.label_audits import (
    AuditRecord,
    SuspectRow,
    create_audit,
    find_audit,
    get_audit,
    set_fold,
    store_scores,
    suspects,
)
from boneclf.store.provenance import label_version
from boneclf.store.queries import dataset_id_of, split_images
from boneclf.store.schema import SplitVersion
from boneclf.vocabulary import FRACTURE

from .evaluation import load_run_model, predict_examples
from .label_ranking import method_name, rank_labels
from .run_reuse import identity, train_or_reuse
from .train_config import TrainConfig
from .training_data import load_stage_data


@dataclass
class FoldOutcome(Result):
    fold: int
    split: str
    run_id: int
    how: str  # trained, resumed or reused
    studies: int  # scored by this fold's model


@dataclass
class AuditResult(Result):
    audit: AuditRecord
    folds: list[FoldOutcome] = field(default_factory=list)
    suspects: list[SuspectRow] = field(default_factory=list)  # most suspicious first
    reused: bool = False  # the audit had finished before: nothing was trained or ranked


def audit_labels(engine: Engine, dataset: str, config: TrainConfig, *, folds: int = 5,
                 progress: ProgressFactory = silent, verbose="auto", callbacks: list | None = None) -> AuditResult:
    """Audit DATASET's labels of CONFIG's parts (all when None), training each fold with CONFIG's options."""
    config = replace(config, stage=FRACTURE, shared=True, split="").resolved()
    with engine.connect() as conn:
        dataset_id = dataset_id_of(conn, dataset)
        parts = list(config.parts or dataset_parts(conn, dataset_id))
        version = label_version(conn, dataset_id)
    config = replace(config, parts=tuple(parts))
    options = identity(config)
    with engine.begin() as conn:
        found = find_audit(conn, dataset_id, parts, folds, options, version)
        audit_id = found.id if found else create_audit(conn, dataset_id, parts, folds, options, version,
                                                       method_name())
    if found is not None and found.status == "finished":
        return AuditResult(found, suspects=suspects(engine, found.id), reused=True)
    splits = make_fold_splits(engine, audit_id, dataset_id, parts, folds, config.seed)
    outcomes = []
    for split in splits:
        run_id, how = _fold_run(engine, audit_id, split, config, progress, verbose, callbacks)
        set_fold(engine, audit_id, split.fold, split_id=split.split_id, run_id=run_id)
        outcomes.append(FoldOutcome(split.fold, split.name, run_id, how, 0))
    rows = _out_of_fold(engine, splits, outcomes, parts)
    ranking = rank_labels([r[2] for r in rows], [r[3] for r in rows])
    store_scores(engine, audit_id, [(*row, float(score), int(rank), bool(flag)) for row, score, rank, flag
                                    in zip(rows, ranking.scores, ranking.ranks, ranking.flagged)])
    for outcome in outcomes:
        outcome.studies = sum(1 for row in rows if row[1] == outcome.fold)
    return AuditResult(get_audit(engine, audit_id), outcomes, suspects(engine, audit_id))


def _fold_run(engine: Engine, audit_id: int, split: FoldSplit, config: TrainConfig, progress, verbose,
              callbacks) -> tuple[int, str]:
    """The finished run of a fold: one already trained on its split, one resumed, or a new one."""
    again = f"run the same `bonedb labels suspects` again to continue label audit {audit_id}"
    try:
        return train_or_reuse(engine, split.split_id, replace(config, split=split.name), progress=progress,
                              verbose=verbose, callbacks=callbacks, busy=f"{again} (fold {split.fold})")
    except KeyboardInterrupt:
        raise Interrupted(f"fold {split.fold} of label audit {audit_id} was interrupted; {again} (finished folds "
                          "are reused, the interrupted one resumes from its last epoch)") from None


# (study id, fold, label as scored, probability)
OutOfFold = tuple[int, int, int, float]


def _out_of_fold(engine: Engine, splits: list[FoldSplit], outcomes: list[FoldOutcome],
                 parts: list[str]) -> list[OutOfFold]:
    """Each study's probability from its fold's model: the mean over its images, as evaluation does."""
    rows: list[OutOfFold] = []
    for split, outcome in zip(splits, outcomes):
        loaded = load_run_model(engine, outcome.run_id)
        examples = load_stage_data(engine, split.name, FRACTURE, tuple(parts)).subsets["test"]
        probabilities, kept = predict_examples(loaded.model, examples, loaded.spec)
        with engine.connect() as conn:
            split_id = conn.execute(select(SplitVersion.id).where(SplitVersion.name == split.name)).scalar_one()
            study_of = {image.image_id: (image.study_id, image.label) for image in split_images(conn, split_id)}
        by_study: dict[int, list[float]] = defaultdict(list)
        label_of: dict[int, int] = {}
        for row, index in enumerate(kept):
            study_id, label = study_of[examples.image_ids[index]]
            by_study[study_id].append(float(probabilities[row].reshape(-1)[0]))
            label_of[study_id] = label
        if not by_study:
            raise BonedbError(f"no image of fold {split.fold} ({split.name}) could be read: restore the files "
                              "(`bonedb audit dataset` finds them)")
        rows.extend((study_id, split.fold, label_of[study_id], float(np.mean(found)))
                    for study_id, found in sorted(by_study.items()))
    return rows
