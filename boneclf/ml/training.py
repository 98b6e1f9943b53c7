"""`bonedb train`: train a stage from a recorded split, record the run, leave its files in runs/<id>/.

`train` starts runs (one, or for stage 2 without --shared one per part), `resume` continues one.
The options are TrainConfig (train_config.py), the run's files and records run_folder.py's, the
Keras loop job.py's.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from sqlalchemy import Engine

from boneclf.errors import BonedbError, Interrupted
from boneclf.progress import ProgressFactory, silent
from boneclf.results import Result, plural
from boneclf.scores import StageMetrics
from boneclf.store.provenance import LabelChanges
from boneclf.store.queries import split_dataset, synthetic_note
from boneclf.store.runs import get_run, headline, set_parameters
from boneclf.vocabulary import FRACTURE

from .cluster import cluster_role, patch_keras_for_multi_worker
from .file_screen import skip_reasons
from .interrupts import deferred_sigint
from .job import Job, strategy
from .run_folder import (
    LOCK_FILE,
    Ledger,
    RunFolder,
    RunLock,
    foreign_folder,
    ledger_for,
    refuse_if_training,
    settle_dead_runs,
    write_json,
)
from .tf_env import keras as _keras
from .train_config import CACHE_MODES, RESUMABLE, TrainConfig
from .training_data import StageData, load_stage_data

__all__ = ["CACHE_MODES", "RESUMABLE", "RunResult", "TrainConfig", "resume", "train"]


@dataclass
class RunResult(Result):
    run_id: int | None  # None: trained from an export, not recorded (yet)
    stage: str
    parts: list[str]
    architecture: str
    status: str
    metrics: StageMetrics | None = None  # validation scores, once finished
    skipped_images: list[str] = field(default_factory=list)
    skip_reasons: dict[str, str] = field(default_factory=dict)  # why each skipped image was left out
    artifact_dir: str = ""
    split_hash: str = ""
    label_version: int | None = None  # of the split's pinned labels, which it trained on
    label_changes: LabelChanges | None = None  # stage 2: labels changed in the dataset since the split was made
    cluster: dict | None = None  # with TF_CONFIG: workers, this one's index, chief or not, batches it trained
    notes: list[str] = field(default_factory=list)  # what a person should know (a resume's fallback checkpoint)
    dataset: str | None = None  # the split's dataset (None: trained from an export)
    data: str | None = None  # what it is: mura, folder, dicom or synthetic

    def headline(self) -> str:
        return headline(self.metrics.to_dict() if self.metrics else None)

    def synthetic_note(self) -> str | None:
        """Said beside the run's figures when it trained on synthetic pictures (None: real data)."""
        return synthetic_note(self.dataset, self.data)


def train(engine: Engine | None, config: TrainConfig, *, progress: ProgressFactory = silent, verbose="auto",
          callbacks: list | None = None) -> list[RunResult]:
    """Train what the config asks for: one run, or for stage 2 without --shared one run per part.

    With `config.from_export` the examples come from that export folder and no database is used
    (engine may be None): each run is a folder under runs_dir that `bonedb runs import` records later."""
    if cluster_role() is not None:
        strategy()  # collectives must be set up before TensorFlow runs its first op
        patch_keras_for_multi_worker()
    if config.from_export:
        config = config.with_export_spec()
    config = config.resolved()
    if not config.from_export and engine is None:
        raise BonedbError("training needs a database, or an export folder (--from-export DIR)")
    groups: list[tuple[str, ...] | None]
    if config.stage == FRACTURE and not config.shared:
        data = _stage_data(engine, config, config.parts)
        per_part = [(part,) for part in sorted(set(data.subsets["train"].parts))]
        _check_every_part(engine, config, per_part)
        groups = list(per_part)
    else:
        groups = [config.parts]
    results: list[RunResult] = []
    for group in groups:
        try:
            results.append(_train_group(engine, replace(config, parts=group), progress, verbose, callbacks))
        except KeyboardInterrupt as exc:
            raise _interrupted_after(exc, results) from None
    return results


def _check_every_part(engine: Engine | None, config: TrainConfig, groups: list[tuple[str]]) -> None:
    """One model per part: every part must be trainable before the first one trains, or none is."""
    bad, reasons = [], []
    for group in groups:
        try:
            _stage_data(engine, config, group)
        except BonedbError as exc:
            bad.append(group[0])
            reasons.append(str(exc))
    if bad:
        good = [group[0] for group in groups if group[0] not in bad]
        remedy = f"leave {', '.join(bad)} out (--parts {','.join(good)}) or" if good else "choose another split or"
        raise BonedbError(f"{'; '.join(reasons)}; nothing was trained: {remedy} train one model over all "
                          "parts with --shared")


def _stage_data(engine: Engine | None, config: TrainConfig, parts: tuple[str, ...] | None) -> StageData:
    """The examples of a stage, from the config's export folder or from the database."""
    if config.from_export:
        from .export_data import load_export_stage_data

        return load_export_stage_data(Path(config.from_export), config.stage, parts)
    assert engine is not None
    return load_stage_data(engine, config.split, config.stage, parts)


def _interrupted_after(exc: KeyboardInterrupt, done: list[RunResult]) -> Interrupted:
    """Ctrl-C during per-part training: say which runs finished before it."""
    if isinstance(exc, Interrupted):
        message = exc.message
    else:
        message = "the next part's run had not started" if done else "no run had started; nothing was written"
    if done:
        message += f"; run(s) {', '.join(str(r.run_id) for r in done)} finished before it"
    return Interrupted(message)


def resume(engine: Engine, run_id: int, *, changes: dict | None = None, progress: ProgressFactory = silent,
           verbose="auto", callbacks: list | None = None) -> RunResult:
    """Continue an interrupted or failed run from its last checkpoint.

    `changes` may set the options in RESUMABLE (TrainConfig field names); any other change is refused,
    since the run would no longer be the run its record describes.
    """
    [row] = settle_dead_runs(engine, [get_run(engine, run_id)])
    if row.parameters.get("from_export"):
        raise BonedbError(f"run {run_id} was trained from an export and imported: it cannot be resumed here; "
                          "train a new run")
    if row.status == "finished":
        raise BonedbError(f"run {run_id} already finished: nothing to resume")
    foreign = foreign_folder(row)
    if foreign:
        raise BonedbError(f"run {run_id} cannot continue in {row.artifact_dir} ({foreign}): delete it with "
                          f"`bonedb runs delete {run_id}` and start a new run")
    refuse_if_training(row, "resume it", unknown=f"delete it with `bonedb runs delete {run_id} --force` and start a "
                                                 "new run")
    recorded = TrainConfig.from_parameters(row.parameters)
    config = recorded.changed_on_resume(changes or {}, run_id)
    folder = Path(row.artifact_dir)
    lock = RunLock.take(folder) if folder.is_dir() else None
    if folder.is_dir() and lock is None:  # another resume of it started since the check above
        raise BonedbError(f"run {run_id} is being resumed by another process (it holds {folder / LOCK_FILE})")
    try:
        if config != recorded:
            set_parameters(engine, run_id, config.to_parameters())
        return _train_group(engine, config, progress, verbose, callbacks, run_id=run_id, lock=lock)
    finally:
        if lock is not None:
            lock.release()


def _train_group(engine: Engine | None, config: TrainConfig, progress: ProgressFactory, verbose,
                 callbacks: list | None, run_id: int | None = None, lock: RunLock | None = None) -> RunResult:
    keras = _keras()
    data = _stage_data(engine, config, config.parts)
    parts = sorted(set(data.subsets["train"].parts))
    config = replace(config, parts=tuple(parts))
    resuming = run_id is not None
    role = cluster_role()
    facts = None
    if engine is not None and data.export is None:  # read before the run is opened: a failure here leaves no run
        with engine.connect() as conn:
            facts = split_dataset(conn, data.stored_split().id)
    ledger = ledger_for(engine, config, chief=role is None or role.chief)
    run_id, run_dir = ledger.open(config, data, run_id)
    held = lock or _claim_folder(ledger, run_id, run_dir, fresh=not resuming and not config.from_export)
    result = RunResult(run_id, config.stage, parts, config.architecture, "running", artifact_dir=str(run_dir),
                       split_hash=data.split.content_hash, label_version=data.label_version,
                       label_changes=data.label_changes)
    if facts is not None:
        result.dataset, result.data = facts.name, facts.nature
    try:
        keras.utils.set_random_seed(config.seed)
        if config.mixed_precision:
            keras.mixed_precision.set_global_policy("mixed_float16")
        _write_run_files(RunFolder(run_dir), config, data, run_id)
        ledger.started(run_dir)
        with deferred_sigint() as stop:
            job = Job(config, data, run_dir, progress, verbose, list(callbacks or []), resuming, stop)
            result.metrics, result.skipped_images = job.run()
            result.skip_reasons = skip_reasons(result.skipped_images)
            result.notes = job.notes + ([f"left out {plural(data.flagged_left_out, 'image')} flagged as maybe "
                                         "showing identity in their pixels, as `bonedb export` does"]
                                        if data.flagged_left_out else [])
            stop.check()  # a Ctrl-C after the last batch still means "stop", not "finished"
        result.status = "finished"
        ledger.close("finished", metrics=result.metrics.to_dict())
    except KeyboardInterrupt:
        if config.from_export:
            ledger.close("interrupted", error="interrupted")
            raise Interrupted(f"training from the export was interrupted; {run_dir} is marked interrupted") from None
        ledger.close("interrupted", error=f"interrupted; resume with bonedb train --resume {run_id}")
        raise Interrupted(f"run {run_id} is marked interrupted; continue it with "
                          f"`bonedb train --resume {run_id}`") from None
    except OSError as exc:  # a file the run could not write (a full disk, a folder made read-only meanwhile)
        ledger.close("failed", error=f"{type(exc).__name__}: {exc}"[:4000])
        if exc.filename is None:
            raise
        marked = f"run {run_id} is marked failed" if run_id is not None else f"{run_dir} is marked failed"
        raise BonedbError(f"cannot write {exc.filename} ({exc.strerror}): {marked}; make room or make the folder "
                          "writable, then resume it") from exc
    except BaseException as exc:
        ledger.close("failed", error=f"{type(exc).__name__}: {exc}"[:4000])
        raise
    finally:
        if config.mixed_precision:
            keras.mixed_precision.set_global_policy("float32")
        if held is not lock:
            held.release()
        ledger.clean_up()
    if role is not None:
        result.cluster = {"workers": role.workers, "index": role.index, "chief": role.chief,
                          "train_batches": job.train_batches, **job.division}
        if not role.chief:
            result.artifact_dir = ""  # its scratch folder is gone
    return result


def _claim_folder(ledger: Ledger, run_id: int | None, run_dir: Path, *, fresh: bool) -> RunLock:
    """The run's folder, made and locked by this process for as long as it trains. A run that cannot have
    its folder is closed as failed, with the reason. FRESH: a new run, whose folder must be empty."""
    try:
        if fresh and run_dir.exists() and any(p.name != LOCK_FILE for p in run_dir.iterdir()):
            ledger.close("failed", error=f"{run_dir} already holds files")
            raise BonedbError(f"{run_dir} already holds another run's files (is this runs folder shared with another "
                              "database?): pass another --runs-dir")
        run_dir.mkdir(parents=True, exist_ok=True)
        lock = RunLock.take(run_dir)
    except OSError as exc:
        reason = f"cannot make the run's folder {run_dir} ({exc.strerror or exc})"
        ledger.close("failed", error=reason)
        marked = f"; run {run_id} is marked failed" if run_id is not None else ""
        raise BonedbError(f"{reason}: pass a --runs-dir this user can write to{marked}") from None
    if lock is None:  # only a resume can meet a live lock, and resume() holds it before this
        raise BonedbError(f"another process trains in {run_dir} (it holds {run_dir / LOCK_FILE})")
    return lock


def _write_run_files(folder: RunFolder, config: TrainConfig, data: StageData, run_id: int | None) -> None:
    """config.json (what proves the folder is this run's) and class_names.json, before training starts."""
    write_json(folder.config, {**config.to_parameters(), "run_id": run_id, "image_spec": config.image_spec().to_dict(),
                               "split_hash": data.split.content_hash, "label_version": data.label_version,
                               "versions": versions()})
    write_json(folder.class_names, data.class_names)


def versions() -> dict:
    """The software a run was trained with, for its record."""
    import platform

    import boneclf

    from .tf_env import tensorflow

    return {"bonedb": boneclf.__version__, "tensorflow": tensorflow().__version__, "keras": _keras().__version__,
            "numpy": np.__version__, "python": platform.python_version()}
