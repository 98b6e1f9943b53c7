"""`bonedb evaluate`: score a finished run on its split's test (or val) subset, the way MURA is scored."""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from sqlalchemy import Engine

from boneclf.data.leak_groups import UnionFind
from boneclf.errors import BonedbError
from boneclf.results import Result, plural
from boneclf.scores import BinaryMetrics, MulticlassMetrics, StageMetrics, metrics_from_dict
from boneclf.store.duplicates import group_memberships
from boneclf.store.provenance import LabelChanges
from boneclf.store.queries import dataset_facts, synthetic_note
from boneclf.store.runs import (
    EvaluationRecord,
    RunRecord,
    get_run,
    latest_evaluation,
    save_evaluation,
)
from boneclf.vocabulary import BODYPART

from .file_screen import skip_reasons
from .image_spec import ImageSpec
from .metrics import binary_metrics, effective_size, format_interval, multiclass_metrics
from .pipeline import Examples, decoded_dataset
from .run_folder import RunFolder, predictions_file, resume_advice, settle_dead_runs
from .tf_env import keras as _keras
from .tf_env import tensorflow
from .train_config import TrainConfig
from .training_data import LABEL_SOURCES, load_stage_data

SUBSETS = ("test", "val")


@dataclass
class LoadedRun:
    """A finished run with its model loaded: what evaluation, prediction and Grad-CAM need."""

    run: RunRecord
    config: TrainConfig
    spec: ImageSpec
    class_names: list[str]
    model: Any  # keras.Model


def load_run_model(engine: Engine, run_id: int) -> LoadedRun:
    from . import layers  # noqa: F401  (registers bonedb's custom layers for loading)

    [run] = settle_dead_runs(engine, [get_run(engine, run_id)])
    if run.status != "finished":
        raise BonedbError(f"run {run_id} is {run.status}, not finished: {resume_advice(run)}")
    folder = RunFolder(Path(run.artifact_dir))
    if not folder.model.is_file():
        raise BonedbError(f"run {run_id}: {folder.model} is missing; the run's folder was moved or deleted")
    class_names = json.loads(folder.class_names.read_text())
    model = _keras().models.load_model(folder.model)
    return LoadedRun(run, TrainConfig.from_parameters(run.parameters), ImageSpec.from_dict(run.image_spec),
                     class_names, model)


def predict_examples(model, examples: Examples, spec: ImageSpec,
                     batch_size: int = 64) -> tuple[np.ndarray, list[int]]:
    """(probabilities, indices of the examples that decoded): undecodable files are left out."""
    tf = tensorflow()
    ds = decoded_dataset(examples, spec, cache=None)
    indices: list[int] = []
    outputs = []
    inputs = ds.map(lambda i, x, _y: (i, spec.model_input(x)), num_parallel_calls=tf.data.AUTOTUNE)
    for batch_indices, images in inputs.batch(batch_size):
        indices.extend(batch_indices.numpy().tolist())
        outputs.append(model(images, training=False).numpy())
    if not outputs:
        return np.zeros((0, model.output_shape[-1])), []
    return np.concatenate(outputs), indices


class PartRow(NamedTuple):
    """One body part (or "overall") of a stage-2 evaluation: the paper's table, with intervals."""

    part: str
    images: int
    image_accuracy: float | None
    image_auc: float | None
    studies: int
    study_accuracy: float | None
    study_accuracy_ci: str
    kappa: float | None
    kappa_ci: str
    study_auc: float | None


@dataclass
class EvaluationResult(Result):
    run_id: int
    subset: str
    stage: str
    architecture: str
    overall: StageMetrics
    per_part: dict[str, BinaryMetrics] = field(default_factory=dict)
    skipped_images: list[str] = field(default_factory=list)
    skip_reasons: dict[str, str] = field(default_factory=dict)  # why each skipped image was left out (fresh only)
    evaluation_id: int | None = None
    split_hash: str | None = None  # of the split it scored
    labels: str | None = None  # pinned (the split's) or current (today's)
    label_version: int | None = None  # of the labels it scored against
    label_changes: LabelChanges | None = None  # stage 2: pinned labels of the subset that differ from today's
    # Copies of one picture inside the scored subset (images beyond the first of each duplicate group):
    # they are not independent test cases; intervals resample leak groups, and the CLI warns.
    duplicates_in_subset: int = 0
    leak_groups: int | None = None  # the units the intervals resampled (studies united with duplicate groups)
    dedupable_in_subset: int = 0  # of the copies, identical ones whose labels agree: `split create --dedupe`'s
    dataset: str | None = None  # the split's dataset
    data: str | None = None  # what it is: mura, folder, dicom or synthetic (figures on synthetic mean little)

    def synthetic_note(self) -> str | None:
        """Said beside every figure scored on synthetic pictures (None: real data)."""
        return synthetic_note(self.dataset, self.data)

    def _studies(self) -> int:
        """Scored units: studies for stage 2, images for stage 1 (each its own case)."""
        return self.overall.study.n if isinstance(self.overall, BinaryMetrics) else self.overall.n

    def copies_warning(self) -> str | None:
        """What the copies inside the scored subset mean, and only advice that removes them (None: no copies)."""
        if not self.duplicates_in_subset:
            return None
        text = (f"the {self.subset} subset holds {plural(self.duplicates_in_subset, 'copy', 'copies')} of its own "
                f"pictures (duplicate groups): they are not independent cases; intervals rest on "
                f"{effective_size(self._studies(), self.leak_groups)}")
        if self.dedupable_in_subset:
            text += (f"; `bonedb split create NAME --dedupe` leaves out the "
                     f"{plural(self.dedupable_in_subset, 'identical copy', 'identical copies')} whose labels agree")
        kept = self.duplicates_in_subset - self.dedupable_in_subset
        if kept:
            text += (f"; {'the' if not self.dedupable_in_subset else 'the other'} "
                     f"{plural(kept, 'copy is a near copy', 'copies are near copies')} (similar, not identical) "
                     "or identical with disagreeing labels, which --dedupe keeps: review them with "
                     "`bonedb duplicates list`")
        return text

    @classmethod
    def from_record(cls, run: RunRecord, record: EvaluationRecord) -> EvaluationResult:
        stored = record.metrics
        overall = metrics_from_dict(stored.get("overall")) or MulticlassMetrics.from_dict({})
        per_part = {part: BinaryMetrics.from_dict(m) for part, m in (stored.get("per_part") or {}).items()}
        return cls(run.id, record.subset, run.stage, run.architecture, overall, per_part,
                   skipped_images=stored.get("skipped_images") or [], evaluation_id=record.id,
                   split_hash=record.split_hash, labels=record.labels, label_version=record.label_version)

    def part_rows(self) -> list[PartRow]:
        """Stage 2: the table per body part, then overall."""
        rows = []
        for part, m in [*self.per_part.items(), ("overall", self.overall)]:
            assert isinstance(m, BinaryMetrics), "part rows are stage 2's"
            image, study = m.image, m.study
            rows.append(PartRow(part, image.n, image.accuracy, image.auc, study.n, study.accuracy,
                                format_interval(study.accuracy_ci), study.kappa, format_interval(study.kappa_ci),
                                study.auc))
        return rows


def evaluate_run(engine: Engine, run_id: int, subset: str = "test", labels: str = "pinned") -> EvaluationResult:
    """Score a finished run on its split's subset, against the labels the split pinned (the ones the run
    trained with) or, with labels="current", today's labels of the same studies; recorded either way."""
    if subset not in SUBSETS:
        raise BonedbError(f"--subset {subset!r}: choose test or val")
    if labels not in LABEL_SOURCES:
        raise BonedbError(f"--labels {labels!r}: choose pinned or current")
    loaded = load_run_model(engine, run_id)
    run = loaded.run
    data = load_stage_data(engine, run.split_name, run.stage, tuple(run.parts), labels=labels, changes_in=subset)
    examples = data.subsets[subset]
    if not len(examples):
        raise BonedbError(f"split {run.split_name!r} has no {subset} images for {', '.join(run.parts)}")
    probabilities, kept = predict_examples(loaded.model, examples, loaded.spec)
    used = examples.take(kept)
    split = data.stored_split()
    with engine.connect() as conn:
        facts = dataset_facts(conn, split.dataset_id)
    if run.stage == BODYPART:
        scored = Scored(multiclass_metrics(used.labels, probabilities, loaded.class_names))
    else:
        scored = _per_study(engine, split.dataset_id, used, probabilities.reshape(-1))
    result = EvaluationResult(run_id, subset, run.stage, run.architecture, scored.overall, scored.per_part,
                              skipped_images=[examples.paths[i] for i in sorted(set(range(len(examples))) - set(kept))],
                              split_hash=split.content_hash, labels=labels, label_version=data.label_version,
                              label_changes=data.label_changes, duplicates_in_subset=scored.copies,
                              leak_groups=scored.leak_groups, dedupable_in_subset=scored.dedupable,
                              dataset=facts.name, data=facts.nature)
    result.skip_reasons = skip_reasons(result.skipped_images)
    _write_predictions(predictions_file(Path(run.artifact_dir), subset, labels), used, probabilities,
                       loaded.class_names)
    stored = {key: result.to_dict()[key] for key in ("run_id", "subset", "stage", "architecture", "overall",
                                                     "per_part", "skipped_images")}
    result.evaluation_id = save_evaluation(engine, run_id, subset, stored, split_hash=split.content_hash,
                                           labels=labels, label_version=result.label_version)
    return result


@dataclass
class Scored:
    """What evaluate_run computed, before it is recorded."""

    overall: StageMetrics
    per_part: dict[str, BinaryMetrics] = field(default_factory=dict)
    copies: int = 0  # copies of one picture within the scored examples
    leak_groups: int | None = None
    dedupable: int = 0


def _per_study(engine: Engine, dataset_id: int, used: Examples, scores: np.ndarray) -> Scored:
    """Stage 2: image and study scores overall and per part, intervals over leak groups."""
    groups, copies, dedupable = leak_clusters(engine, dataset_id, used)
    per_part = {
        part: binary_metrics([y for y, p in zip(used.labels, used.parts) if p == part],
                             [s for s, p in zip(scores, used.parts) if p == part],
                             [k for k, p in zip(used.studies, used.parts) if p == part],
                             groups=[g for g, p in zip(groups, used.parts) if p == part])
        for part in sorted(set(used.parts))
    }
    return Scored(binary_metrics(used.labels, scores, used.studies, groups=groups), per_part, copies,
                  len(set(groups)), dedupable)


class LeakClusters(NamedTuple):
    groups: list[str]  # a leak-group key per example
    copies: int  # examples beyond the first of each picture (exact or near duplicates)
    dedupable: int  # of them, identical copies whose labels agree: what `split create --dedupe` leaves out


def leak_clusters(engine: Engine, dataset_id: int, examples: Examples) -> LeakClusters:
    """Studies united with the dataset's duplicate groups, so that copies of one picture are resampled
    together, and the copies among EXAMPLES. For MURA (no duplicates) each study is its own group, the
    protocol as before."""
    with engine.connect() as conn:
        memberships = group_memberships(conn, dataset_id)
        exact = group_memberships(conn, dataset_id, ("exact",))
    row_of: dict[int, list[int]] = defaultdict(list)
    for row, image_id in enumerate(examples.image_ids):
        row_of[image_id].append(row)
    studies, rows, grouped = UnionFind(), UnionFind(), set()
    for members in memberships.values():
        present = [row for m in members for row in row_of.get(m, [])]
        if len(present) > 1:
            studies.union(examples.studies[row] for row in present)
            rows.union(present)
            grouped.update(present)
    copies = len(grouped) - len({rows.root(row) for row in grouped})
    dedupable = 0
    for members in exact.values():  # as --dedupe decides: copies whose labels disagree all stay
        present = [row for m in members for row in row_of.get(m, [])]
        if len(present) > 1 and len({examples.labels[row] for row in present}) == 1:
            dedupable += len(present) - 1
    return LeakClusters([studies.root(study) for study in examples.studies], copies, min(dedupable, copies))


def _leak_clusters(engine: Engine, dataset_id: int, examples: Examples) -> tuple[list[str], int]:
    """(a leak-group key per example, copies within the examples): leak_clusters without the dedupable count."""
    found = leak_clusters(engine, dataset_id, examples)
    return found.groups, found.copies


def _write_predictions(path: Path, examples: Examples, probabilities: np.ndarray, class_names: list[str]) -> None:
    """Per-image predictions, for reports and galleries."""
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        columns = ["probability"] if probabilities.shape[1] == 1 else [f"p_{c}" for c in class_names]
        writer.writerow(["image_id", "path", "part", "study", "label", *columns])
        for i in range(len(examples)):
            writer.writerow([examples.image_ids[i], examples.paths[i], examples.parts[i], examples.studies[i],
                             examples.labels[i], *(f"{p:.6f}" for p in probabilities[i])])


def latest_result(engine: Engine, run: RunRecord, subset: str | None = "test") -> EvaluationResult | None:
    record = latest_evaluation(engine, run.id, subset)
    return None if record is None else EvaluationResult.from_record(run, record)
