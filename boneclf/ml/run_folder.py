"""A run's folder (runs/<id>/ or, from an export, a named folder): the names of its files, the ledgers
that record a run as it starts and however it ends, what to advise about a run that did not finish,
and deleting runs with their folders.

The one owner of the file names: the trainer writes them, evaluation, import and delete read them.
Light to import (no TensorFlow), so the web's pages and `bonedb runs` do not load the trainer.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import Engine

try:
    import fcntl
except ImportError:  # no flock (Windows): whether a run still trains is then its status column alone
    fcntl = None  # type: ignore[assignment]

from boneclf.clock import utc_now
from boneclf.errors import BonedbError
from boneclf.files import atomic_write
from boneclf.results import Result
from boneclf.store.runs import (
    RunRecord,
    count_evaluations,
    create_run,
    delete_run_rows,
    get_run,
    list_runs,
    set_status,
)

from .train_config import TrainConfig, resumable_options

if TYPE_CHECKING:
    from .training_data import StageData

CONFIG_FILE = "config.json"  # the run's options, id and split hash: what proves a folder is the run's own
CLASS_NAMES_FILE = "class_names.json"
MODEL_FILE = "model.keras"  # the finished model
HISTORY_FILE = "history.json"  # per-epoch losses and metrics of the whole run
STATE_FILE = "state.json"  # where training stands after the last epoch, for --resume
CHECKPOINT_FILE = "checkpoint.keras"  # the model after the last epoch, as bonedb before 0.2 kept it
RUN_FILE = "run.json"  # a run trained from an export, as `bonedb runs import` records it
DECODED_CACHE = "decoded-cache"  # the persistent decoded cache's default folder, beside the runs
LOCK_FILE = ".training.lock"  # held (an OS lock) by the process that trains the run, while it trains


@dataclass(frozen=True)
class RunFolder:
    """The files of one run's folder."""

    path: Path

    @property
    def config(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def class_names(self) -> Path:
        return self.path / CLASS_NAMES_FILE

    @property
    def model(self) -> Path:
        return self.path / MODEL_FILE

    @property
    def history(self) -> Path:
        return self.path / HISTORY_FILE

    @property
    def state(self) -> Path:
        return self.path / STATE_FILE

    def checkpoint(self, epoch: int) -> Path:
        """The model after EPOCH (the newest two are kept: a torn newest one leaves the one before)."""
        return self.path / f"checkpoint-{epoch:04d}.keras"

    @property
    def run_record(self) -> Path:
        return self.path / RUN_FILE

    @property
    def lock(self) -> Path:
        return self.path / LOCK_FILE

    def log(self, phase: str) -> Path:
        """The CSV log of a training phase (head, finetune, end_to_end)."""
        return self.path / f"{phase}_log.csv"

    def tensorboard(self, phase: str) -> Path:
        return self.path / "tensorboard" / phase

    def tf_cache(self, subset: str) -> Path:
        """--cache disk: the run's own tf.data cache of a subset."""
        return self.path / "cache" / f"{subset}.tfcache"

    def predictions(self, subset: str, labels: str | None) -> Path:
        return predictions_file(self.path, subset, labels)


def predictions_file(folder: Path, subset: str, labels: str | None) -> Path:
    """Per-image predictions of an evaluation; those scored against today's labels are kept apart."""
    return folder / (f"predictions_{subset}_current.csv" if labels == "current" else f"predictions_{subset}.csv")


def model_parameters(artifact_dir: str) -> int | None:
    """The weights in a run's model.keras, as Keras' count_params gives them, read from the file's weights (the
    "layers" group; the optimizer's state is not the model's) without loading TensorFlow. None: no model."""
    import zipfile

    import h5py

    path = Path(artifact_dir) / MODEL_FILE
    try:
        with zipfile.ZipFile(path) as archive, archive.open("model.weights.h5") as stored:
            weights = h5py.File(stored, "r")
            sizes: list[int] = []
            weights["layers"].visititems(lambda _name, item: sizes.append(item.size)
                                         if isinstance(item, h5py.Dataset) else None)
            return int(sum(sizes))
    except (OSError, KeyError, zipfile.BadZipFile):
        return None


def write_json(path: Path, data: Any) -> None:
    """A run's JSON file, written whole (a reader never sees half of it)."""
    atomic_write(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def not_the_runs_folder(folder: Path, run: RunRecord) -> str | None:
    """Why FOLDER may hold something other than RUN's files (None when it is the run's own)."""
    if not folder.is_dir():
        return "not a folder"
    if all(p.name == LOCK_FILE for p in folder.iterdir()):  # empty, or made and locked by a run that died then
        return None
    try:
        config = json.loads((folder / CONFIG_FILE).read_text())
    except (OSError, ValueError):
        return f"no bonedb {CONFIG_FILE} in it"
    if config.get("run_id") != run.id or config.get("split_hash") != run.split_hash:
        return f"its {CONFIG_FILE} belongs to another run (run {config.get('run_id')})"
    return None


def foreign_folder(run: RunRecord) -> str | None:
    """Why RUN's recorded folder is not its own, when it exists and is not (None otherwise)."""
    folder = Path(run.artifact_dir)
    return not_the_runs_folder(folder, run) if folder.exists() else None


# -- is the run still training? ------------------------------------------------------------------


class RunLock:
    """An exclusive OS lock on a run folder's lock file, held by the process that trains the run. The OS
    drops it when the process ends however it ends (kill -9 included), so a run whose status says running
    but whose lock nobody holds has lost its process."""

    def __init__(self, handle: int, path: Path):
        self.handle, self.path = handle, path

    @classmethod
    def take(cls, folder: Path) -> RunLock | None:
        """The lock of the run in FOLDER (made if need be), or None while another process holds it."""
        path = folder / LOCK_FILE
        if fcntl is None:
            return cls(-1, path)
        handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(handle)
            return None
        return cls(handle, path)

    def release(self) -> None:
        if self.handle >= 0:
            os.close(self.handle)  # closing the only descriptor drops the lock
            self.handle = -1


def still_training(run: RunRecord) -> bool | None:
    """Whether a process is training RUN now: True (it holds the run's lock), False (its status is not
    running, or nobody holds the lock: the process is gone), None (its folder has no lock file, as
    before bonedb had one, or before its folder was made: only the status speaks)."""
    if run.status != "running":
        return False
    folder = Path(run.artifact_dir) if run.artifact_dir else None
    if fcntl is None or folder is None or not (folder / LOCK_FILE).is_file():
        return None
    lock = RunLock.take(folder)
    if lock is None:
        return True
    lock.release()
    return False


GONE = "its training process is gone (killed, or its machine restarted) without closing the run"


def settle_dead_runs(engine: Engine, runs: list[RunRecord]) -> list[RunRecord]:
    """RUNS, those marked running whose process is gone marked interrupted (with why) in the database too,
    so that resume, delete, evaluate and the listings all see what is true."""
    settled = []
    for run in runs:
        if run.status == "running" and still_training(run) is False:
            set_status(engine, run.id, "interrupted", error=f"interrupted: {GONE}; resume with bonedb train "
                                                            f"--resume {run.id}")
            run = get_run(engine, run.id)
        settled.append(run)
    return settled


def settle_running(engine: Engine) -> None:
    """Every run marked running whose process is gone marked interrupted (before listing runs)."""
    settle_dead_runs(engine, list_runs(engine, status="running"))


def refuse_if_training(run: RunRecord, doing: str, *, force: bool = False,
                       unknown: str = "pass --force") -> None:
    """Refuse DOING to a run that is still training. A run marked running whose folder has no lock file
    (nothing tells whether its process lives) is refused too, unless FORCE; UNKNOWN says what to do then."""
    alive = still_training(run)
    started = f"started {run.started_at:%Y-%m-%d %H:%M} on {run.host}"
    if alive:
        raise BonedbError(f"run {run.id} is still training ({started}; its process holds "
                          f"{Path(run.artifact_dir) / LOCK_FILE}): let it end or stop it with Ctrl-C, then {doing}")
    if alive is None and run.status == "running" and not force:
        raise BonedbError(f"run {run.id} is running ({started}): let it end or stop it with Ctrl-C; if its process "
                          f"is gone (killed, machine restarted), {unknown}")


# -- advice -------------------------------------------------------------------------------------


def resume_advice(run: RunRecord) -> str:
    """What to do about a run that did not finish, without advising a resume that would fail the same way."""
    if run.status == "running":
        return "wait for it to finish"
    foreign = foreign_folder(run)
    if foreign:
        return (f"its folder {run.artifact_dir} is not its own ({foreign}): delete it with "
                f"`bonedb runs delete {run.id}` and start a new run")
    if run.status == "interrupted":
        return f"continue it with `bonedb train --resume {run.id}`"
    error = (run.error or "no error recorded").splitlines()[0][:300]
    if "tensorboard" in error.lower():
        return (f"it failed writing TensorBoard logs ({error}): continue it without them with "
                f"`bonedb train --resume {run.id} --no-tensorboard`, or install tensorboard and resume")
    if any(word in error for word in ("ResourceExhausted", "OOM", "out of memory")):
        smaller = max(1, int(run.parameters.get("batch_size", 32)) // 2)
        return (f"it ran out of memory ({error}): continue it with smaller batches, "
                f"`bonedb train --resume {run.id} --batch-size {smaller}`")
    return (f"it failed ({error}); `bonedb train --resume {run.id}` continues it only once that cause is gone "
            f"(on resume only {resumable_options()} may change), otherwise delete it "
            f"with `bonedb runs delete {run.id}` and start a new run")


# -- ledgers: where a run is recorded ------------------------------------------------------------


class Ledger(Protocol):
    """Records a run as it opens and however it closes."""

    def open(self, config: TrainConfig, data: StageData, run_id: int | None) -> tuple[int | None, Path]: ...

    def started(self, run_dir: Path) -> None: ...

    def close(self, status: str, *, metrics: dict | None = None, error: str | None = None) -> None: ...

    def clean_up(self) -> None: ...


def ledger_for(engine: Engine | None, config: TrainConfig, *, chief: bool) -> Ledger:
    """The database's for a run from a split, the folder's for a run from an export, scratch for a worker
    that is not the chief (it trains alongside, records nothing, keeps nothing)."""
    if not chief:
        return ScratchLedger()
    if config.from_export:
        return FolderLedger()
    assert engine is not None, "a run from a split is recorded in its database"
    return DatabaseLedger(engine)


class ScratchLedger:
    """A worker other than the chief: its checkpoints, logs and model go to a temporary folder, removed at
    the end (every worker must save, since saving reads variables through the strategy)."""

    def open(self, config: TrainConfig, data: StageData, run_id: int | None) -> tuple[int | None, Path]:
        self.run_dir = Path(tempfile.mkdtemp(prefix="bonedb-worker-"))
        return None, self.run_dir

    def started(self, run_dir: Path) -> None:
        pass

    def close(self, status: str, *, metrics: dict | None = None, error: str | None = None) -> None:
        pass

    def clean_up(self) -> None:
        shutil.rmtree(self.run_dir, ignore_errors=True)


class DatabaseLedger:
    """Records a run in the database (training_runs), as it starts and however it ends."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.run_id: int | None = None

    def open(self, config: TrainConfig, data: StageData, run_id: int | None) -> tuple[int | None, Path]:
        from .tf_env import tensorflow

        if run_id is None:
            run_id = create_run(self.engine, stage=config.stage, parts=tuple(config.parts or ()),
                                architecture=config.architecture, parameters=config.to_parameters(),
                                image_spec=config.image_spec().to_dict(), split=data.stored_split(),
                                label_version=data.label_version, tf_version=tensorflow().__version__,
                                runs_dir=str(Path(config.runs_dir).absolute()))
        else:
            set_status(self.engine, run_id, "running")
        self.run_id = run_id
        return run_id, Path(get_run(self.engine, run_id).artifact_dir)

    def started(self, run_dir: Path) -> None:
        pass

    def close(self, status: str, *, metrics: dict | None = None, error: str | None = None) -> None:
        assert self.run_id is not None, "closed before it was opened"
        set_status(self.engine, self.run_id, status, metrics=metrics, error=error)

    def clean_up(self) -> None:
        pass


class FolderLedger:
    """Records a run trained from an export in its own folder (run.json), for `bonedb runs import`."""

    def open(self, config: TrainConfig, data: StageData, run_id: int | None) -> tuple[int | None, Path]:
        from .tf_env import tensorflow

        now = utc_now()
        parts = tuple(config.parts or ())
        group = parts[0] if len(parts) == 1 else "all"
        base = Path(config.runs_dir).absolute() / f"{data.split.name}-{config.stage}-{group}-{now:%Y%m%d-%H%M%S}"
        self.run_dir = base
        try:
            base.parent.mkdir(parents=True, exist_ok=True)
            for n in range(2, 1000):  # two runs in the same second get distinct folders
                try:
                    self.run_dir.mkdir()
                    break
                except FileExistsError:
                    self.run_dir = base.with_name(f"{base.name}-{n}")
        except OSError as exc:
            raise BonedbError(f"cannot make the run's folder {self.run_dir} ({exc.strerror or exc}): pass a --runs-dir "
                              "this user can write to") from None
        assert data.export is not None, "a folder ledger records a run from an export"
        self.record = {
            "bonedb_run": 1, "stage": config.stage, "parts": list(parts), "architecture": config.arch,
            "parameters": config.to_parameters(), "image_spec": config.image_spec().to_dict(),
            "split_name": data.split.name, "split_hash": data.split.content_hash,
            "label_version": data.label_version, "export": data.export.to_dict(),
            "status": "running", "started_at": now.isoformat(timespec="seconds"),
            "finished_at": None, "host": platform.node()[:255], "tf_version": tensorflow().__version__,
            "metrics": None, "error": None,
        }
        return None, self.run_dir

    def started(self, run_dir: Path) -> None:
        write_json(RunFolder(run_dir).run_record, self.record)

    def close(self, status: str, *, metrics: dict | None = None, error: str | None = None) -> None:
        self.record.update(status=status, metrics=metrics, error=error,
                           finished_at=utc_now().isoformat(timespec="seconds"))
        if self.run_dir.exists():
            write_json(RunFolder(self.run_dir).run_record, self.record)

    def clean_up(self) -> None:
        pass


# -- deleting runs with their folders ------------------------------------------------------------


@dataclass
class RunsDeleted(Result):
    runs: list[int]
    evaluations: int
    folders_removed: list[str] = field(default_factory=list)
    folders_left: list[str] = field(default_factory=list)  # "path: why", never removed


def delete_runs(engine: Engine, run_ids: list[int], *, force: bool = False,
                confirm: Callable[[str], bool] | None = None) -> RunsDeleted:
    """Delete runs, their evaluations and their folders (runs/<id>/), once `confirm(what)` agrees.

    Nothing else refers to a run, so only a run still training is refused: one whose process holds its
    lock always, one marked running without a lock file (nothing tells) unless `force` says its process
    is gone. A run whose lock nobody holds lost its process: it is marked interrupted and deleted.
    A folder is removed only when it is the run's own: its config.json names this run and split, or it
    is empty; anything else is left in place and reported.
    """
    runs = settle_dead_runs(engine, [get_run(engine, run_id) for run_id in dict.fromkeys(run_ids)])
    for run in runs:
        refuse_if_training(run, "delete it", force=force)
    ids = [r.id for r in runs]
    evaluations = count_evaluations(engine, ids)
    what = "; ".join(f"run {r.id} ({r.stage} {r.architecture} on {','.join(r.parts)}, {r.status})" for r in runs)
    folders = [r.artifact_dir for r in runs if r.artifact_dir and Path(r.artifact_dir).exists()]
    action = (f"delete {what}, {evaluations} evaluation(s)"
              + (f" and the folder(s) {', '.join(folders)}" if folders else ""))
    if confirm is not None and not confirm(action):
        raise BonedbError("not confirmed: nothing was deleted")
    result = RunsDeleted(ids, evaluations)
    delete_run_rows(engine, ids)
    for run in runs:
        folder = Path(run.artifact_dir) if run.artifact_dir else None
        if folder is None or not folder.exists():
            continue
        why = not_the_runs_folder(folder, run)
        if why:
            result.folders_left.append(f"{folder}: {why}")
        else:
            shutil.rmtree(folder)
            result.folders_removed.append(str(folder))
    return result
