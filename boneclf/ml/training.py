"""`bonedb train`: train a stage from a recorded split, record the run, leave its files in runs/<id>/.

Pretrained backbones follow the Keras transfer-learning recipe: phase 1 trains the head on the
frozen backbone (by default on features computed once, which on a CPU turns hours into
minutes), phase 2 unfreezes the top of the backbone and trains on at a tenth of the learning
rate with BatchNorm kept in inference mode. A backbone without pretrained weights (the custom
CNN, or --weights none) trains end to end in one phase.
"""

from __future__ import annotations

import importlib.util
import json
import os
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
from sqlalchemy import Engine

from boneclf.clock import utc_now
from boneclf.errors import BonedbError, Interrupted
from boneclf.progress import ProgressFactory, silent
from boneclf.results import Result
from boneclf.store.provenance import LabelChanges
from boneclf.store.runs import (
    RunRecord,
    create_run,
    get_run,
    headline,
    not_the_runs_folder,
    set_parameters,
    set_status,
)
from boneclf.vocabulary import FRACTURE, STAGES

from .backbones import STAGE_DEFAULTS, get_backbone
from .cluster import cluster_role, divide, patch_keras_for_multi_worker
from .image_spec import ImageSpec, spec_for
from .interrupts import StopRequest, deferred_sigint, stop_callback
from .metrics import binary_metrics, multiclass_metrics
from .pipeline import Examples, decoded_dataset, persistent_dataset, warm
from .tf_env import keras as _keras
from .tf_env import tensorflow
from .training_data import StageData, load_stage_data, sample_weights
from .weights import import_command

# persistent: decoded images kept across runs in cache_dir (keyed by content hash and image spec) and in
# memory during the run; memory: decoded once per run; disk: the run's own tf.data cache; none: every epoch.
CACHE_MODES = ("persistent", "memory", "disk", "none")
# What `--resume` may change: how the run is fed and logged, not what it learns from or how.
RESUMABLE = ("tensorboard", "batch_size", "cache", "epochs", "patience")

# Datasets that skip undecodable files have no known length, so Keras notes the end of every
# epoch as "running out of data"; that is expected here, not a problem to show users.
warnings.filterwarnings("ignore", message="Your input ran out of data")


@dataclass
class TrainConfig:
    stage: str
    split: str
    parts: tuple[str, ...] | None = None
    shared: bool = False  # stage 2: one model over all chosen parts instead of one per part
    arch: str | None = None
    weights: str = "imagenet"  # imagenet | none | path to a no-top weights file
    image_size: int | None = None
    epochs: int = 10
    head_epochs: int = 5
    batch_size: int = 32
    lr: float = 1e-3
    seed: int = 42
    fine_tune_from: float = 0.3  # top fraction of the backbone unfrozen in phase 2
    mixed_precision: bool = False
    pad: bool = False
    canny: bool = False
    augment: str = "paper"
    cache: str = "persistent"
    cache_dir: str | None = None  # the persistent decoded cache; default <runs_dir>/decoded-cache
    precompute: bool = True
    patience: int = 5
    tensorboard: bool = True
    runs_dir: str = "runs"
    from_export: str | None = None  # an export folder to train from, with no database


    def resolved(self) -> TrainConfig:
        if self.stage not in STAGES:
            raise BonedbError(f"--stage {self.stage!r}: choose bodypart or fracture")
        arch = self.arch or STAGE_DEFAULTS[self.stage]
        backbone = get_backbone(arch)
        size = self.image_size or backbone.default_size
        if size < backbone.min_size:
            raise BonedbError(f"--image-size {size} is too small for {arch}: use {backbone.min_size} or more")
        if self.cache not in CACHE_MODES:
            raise BonedbError(f"--cache {self.cache!r}: choose {', '.join(CACHE_MODES)}")
        if not 0 < self.fine_tune_from <= 1:
            raise BonedbError(f"--fine-tune-from {self.fine_tune_from}: a fraction of the backbone in (0, 1]")
        if self.weights not in ("imagenet", "none") and not Path(self.weights).is_file():
            raise BonedbError(f"--weights {self.weights}: no such file (use imagenet, none or a weights file)")
        _check_tensorboard(self.tensorboard)
        return replace(self, arch=arch, image_size=size, parts=tuple(sorted(self.parts)) if self.parts else None)

    def image_spec(self) -> ImageSpec:
        """How this run's images become model inputs (on a resolved config)."""
        return spec_for(self.arch, self.image_size, pad=self.pad, canny=self.canny)

    def to_parameters(self) -> dict:
        """The config as stored with the run."""
        data = asdict(self)
        data["parts"] = list(self.parts) if self.parts else None
        return data

    @classmethod
    def from_parameters(cls, parameters: dict) -> TrainConfig:
        """A stored run's config; options added to bonedb since it was recorded take their defaults."""
        known = {k: v for k, v in parameters.items() if k in cls.__dataclass_fields__}
        if known.get("parts"):
            known["parts"] = tuple(known["parts"])
        return cls(**known)


@dataclass
class RunResult(Result):
    run_id: int | None  # None: trained from an export, not recorded (yet)
    stage: str
    parts: list[str]
    architecture: str
    status: str
    metrics: dict = field(default_factory=dict)
    skipped_images: list[str] = field(default_factory=list)
    artifact_dir: str = ""
    split_hash: str = ""
    label_version: int | None = None  # of the split's pinned labels, which it trained on
    label_changes: LabelChanges | None = None  # stage 2: labels changed in the dataset since the split was made
    cluster: dict | None = None  # with TF_CONFIG: workers, this one's index, chief or not, batches it trained

    def headline(self) -> str:
        return headline(self.metrics)


def train(engine: Engine | None, config: TrainConfig, *, progress: ProgressFactory = silent, verbose="auto",
          callbacks: list | None = None) -> list[RunResult]:
    """Train what the config asks for: one run, or for stage 2 without --shared one run per part.

    With `config.from_export` the examples come from that export folder and no database is used
    (engine may be None): each run is a folder under runs_dir that `bonedb runs import` records later."""
    if cluster_role() is not None:
        _strategy()  # collectives must be set up before TensorFlow runs its first op
        patch_keras_for_multi_worker()
    if config.from_export:
        config = _with_export_spec(config)
    config = config.resolved()
    if not config.from_export and engine is None:
        raise BonedbError("training needs a database, or an export folder (--from-export DIR)")
    if config.stage == FRACTURE and not config.shared:
        data = _stage_data(engine, config, config.parts)
        groups = [(part,) for part in sorted(set(data.subsets["train"].parts))]
        _check_every_part(engine, config, groups)
    else:
        groups = [config.parts]
    results: list[RunResult] = []
    for group in groups:
        try:
            results.append(_train_group(engine, replace(config, parts=group), progress, verbose, callbacks))
        except KeyboardInterrupt as exc:
            raise _interrupted_after(exc, results) from None
    return results


def _check_every_part(engine: Engine, config: TrainConfig, groups: list[tuple[str, ...]]) -> None:
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


def _with_export_spec(config: TrainConfig) -> TrainConfig:
    """The config with the export's split name and, for decoded shards, their image size, pad and Canny."""
    from .export_data import read_marker

    folder = Path(config.from_export).absolute()
    marker = read_marker(folder)
    config = replace(config, from_export=str(folder), split=marker["split"])
    stored = marker.get("image_spec")
    if not stored:
        return config
    if config.image_size not in (None, stored["size"]):
        raise BonedbError(f"{folder} holds images decoded at {stored['size']} px: leave out --image-size "
                          f"{config.image_size}, or export the split again with --image-size {config.image_size}")
    return replace(config, image_size=stored["size"], pad=stored["pad"], canny=stored["canny"])


def _stage_data(engine: Engine | None, config: TrainConfig, parts: tuple[str, ...] | None) -> StageData:
    """The examples of a stage, from the config's export folder or from the database."""
    if config.from_export:
        from .export_data import load_export_stage_data

        return load_export_stage_data(Path(config.from_export), config.stage, parts)
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
    row = get_run(engine, run_id)
    if row.parameters.get("from_export"):
        raise BonedbError(f"run {run_id} was trained from an export and imported: it cannot be resumed here; "
                          "train a new run")
    if row.status == "finished":
        raise BonedbError(f"run {run_id} already finished: nothing to resume")
    foreign = Path(row.artifact_dir).exists() and not_the_runs_folder(Path(row.artifact_dir), row)
    if foreign:
        raise BonedbError(f"run {run_id} cannot continue in {row.artifact_dir} ({foreign}): delete it with "
                          f"`bonedb runs delete {run_id}` and start a new run")
    config = TrainConfig.from_parameters(row.parameters)
    changes = {k: v for k, v in (changes or {}).items() if getattr(config, k, None) != v}
    refused = sorted(option_name(k) for k in changes if k not in RESUMABLE)
    if refused:
        raise BonedbError(f"--resume {run_id} continues the run as recorded: {', '.join(refused)} cannot change "
                          f"(only {', '.join(option_name(k) for k in RESUMABLE)} can); start a new run with "
                          "`bonedb train` instead")
    config = replace(config, **changes)
    _check_tensorboard(config.tensorboard)
    if changes:
        set_parameters(engine, run_id, config.to_parameters())
    return _train_group(engine, config, progress, verbose, callbacks, run_id=run_id)


def option_name(field_name: str) -> str:
    """The `bonedb train` option that sets a TrainConfig field."""
    return {"tensorboard": "--no-tensorboard", "precompute": "--no-precompute",
            "split": "--split", "runs_dir": "--runs-dir"}.get(field_name, "--" + field_name.replace("_", "-"))


def resume_advice(run: RunRecord) -> str:
    """What to do about a run that did not finish, without advising a resume that would fail the same way."""
    if run.status == "running":
        return "wait for it to finish"
    foreign = Path(run.artifact_dir).exists() and not_the_runs_folder(Path(run.artifact_dir), run)
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
            f"(on resume only {', '.join(option_name(k) for k in RESUMABLE)} may change), otherwise delete it "
            f"with `bonedb runs delete {run.id}` and start a new run")


def _check_tensorboard(wanted: bool) -> None:
    if wanted and importlib.util.find_spec("tensorboard") is None:
        raise BonedbError("TensorBoard logging is on, but the tensorboard package is not installed: "
                          "`pip install tensorboard`, or pass --no-tensorboard")


def _train_group(engine, config: TrainConfig, progress, verbose, callbacks, run_id: int | None = None) -> RunResult:
    tf = tensorflow()
    keras = _keras()
    data = _stage_data(engine, config, config.parts)
    parts = sorted(set(data.subsets["train"].parts))
    config = replace(config, parts=tuple(parts))
    resuming = run_id is not None
    role = cluster_role()
    if role is not None and not role.chief:
        ledger = _ScratchLedger()  # another worker: trains alongside, records nothing, keeps nothing
    else:
        ledger = _FolderLedger() if config.from_export else _DatabaseLedger(engine)
    run_id, run_dir = ledger.open(config, data, run_id)
    if not resuming and run_dir.exists() and any(run_dir.iterdir()) and not config.from_export:
        ledger.close("failed", error=f"{run_dir} already holds files")
        raise BonedbError(f"{run_dir} already holds another run's files (is this runs folder shared with another "
                          "database?): pass another --runs-dir")
    run_dir.mkdir(parents=True, exist_ok=True)
    result = RunResult(run_id, config.stage, parts, config.arch, "running", artifact_dir=str(run_dir),
                       split_hash=data.split.content_hash, label_version=data.label_version,
                       label_changes=data.label_changes)
    try:
        keras.utils.set_random_seed(config.seed)
        if config.mixed_precision:
            keras.mixed_precision.set_global_policy("mixed_float16")
        _write_json(run_dir / "config.json", {**config.to_parameters(), "run_id": run_id,
                                              "image_spec": config.image_spec().to_dict(),
                                              "split_hash": data.split.content_hash,
                                              "label_version": data.label_version,
                                              "versions": versions(tf)})
        _write_json(run_dir / "class_names.json", data.class_names)
        ledger.started(run_dir)
        with deferred_sigint() as stop:
            job = _Job(config, data, run_dir, progress, verbose, list(callbacks or []), resuming, stop)
            result.metrics, result.skipped_images = job.run()
            stop.check()  # a Ctrl-C after the last batch still means "stop", not "finished"
        result.status = "finished"
        ledger.close("finished", metrics=result.metrics)
    except KeyboardInterrupt:
        if config.from_export:
            ledger.close("interrupted", error="interrupted")
            raise Interrupted(f"training from the export was interrupted; {run_dir} is marked interrupted") from None
        ledger.close("interrupted", error=f"interrupted; resume with bonedb train --resume {run_id}")
        raise Interrupted(f"run {run_id} is marked interrupted; continue it with "
                          f"`bonedb train --resume {run_id}`") from None
    except BaseException as exc:
        ledger.close("failed", error=f"{type(exc).__name__}: {exc}"[:4000])
        raise
    finally:
        if config.mixed_precision:
            keras.mixed_precision.set_global_policy("float32")
        ledger.clean_up()
    if role is not None:
        result.cluster = {"workers": role.workers, "index": role.index, "chief": role.chief,
                          "train_batches": job.train_batches, **job.division}
        if not role.chief:
            result.artifact_dir = ""  # its scratch folder is gone
    return result


def versions(tf) -> dict:
    """The software a run was trained with, for its record."""
    import platform

    import boneclf

    return {"bonedb": boneclf.__version__, "tensorflow": tf.__version__, "keras": _keras().__version__,
            "numpy": np.__version__, "python": platform.python_version()}


class _ScratchLedger:
    """A worker other than the chief: its checkpoints, logs and model go to a temporary folder, removed at
    the end (every worker must save, since saving reads variables through the strategy)."""

    def open(self, config: TrainConfig, data: StageData, run_id: int | None) -> tuple[None, Path]:
        import tempfile

        self.run_dir = Path(tempfile.mkdtemp(prefix="bonedb-worker-"))
        return None, self.run_dir

    def started(self, run_dir: Path) -> None:
        pass

    def close(self, status: str, *, metrics: dict | None = None, error: str | None = None) -> None:
        pass

    def clean_up(self) -> None:
        import shutil

        shutil.rmtree(self.run_dir, ignore_errors=True)


class _DatabaseLedger:
    """Records a run in the database (training_runs), as it starts and however it ends."""

    def __init__(self, engine: Engine):
        self.engine, self.run_id = engine, None

    def open(self, config: TrainConfig, data: StageData, run_id: int | None) -> tuple[int, Path]:
        if run_id is None:
            run_id = create_run(self.engine, stage=config.stage, parts=config.parts, architecture=config.arch,
                                parameters=config.to_parameters(), image_spec=config.image_spec().to_dict(),
                                split=data.split, label_version=data.label_version,
                                tf_version=tensorflow().__version__, runs_dir=str(Path(config.runs_dir).absolute()))
        else:
            set_status(self.engine, run_id, "running")
        self.run_id = run_id
        return run_id, Path(get_run(self.engine, run_id).artifact_dir)

    def started(self, run_dir: Path) -> None:
        pass

    def close(self, status: str, *, metrics: dict | None = None, error: str | None = None) -> None:
        set_status(self.engine, self.run_id, status, metrics=metrics, error=error)

    def clean_up(self) -> None:
        pass


class _FolderLedger:
    """Records a run trained from an export in its own folder (run.json), for `bonedb runs import`."""

    def open(self, config: TrainConfig, data: StageData, run_id: int | None) -> tuple[None, Path]:
        now = utc_now()
        group = config.parts[0] if len(config.parts) == 1 else "all"
        base = Path(config.runs_dir).absolute() / f"{data.split.name}-{config.stage}-{group}-{now:%Y%m%d-%H%M%S}"
        base.parent.mkdir(parents=True, exist_ok=True)
        self.run_dir = base
        for n in range(2, 1000):  # two runs in the same second get distinct folders
            try:
                self.run_dir.mkdir()
                break
            except FileExistsError:
                self.run_dir = base.with_name(f"{base.name}-{n}")
        self.record = {
            "bonedb_run": 1, "stage": config.stage, "parts": list(config.parts), "architecture": config.arch,
            "parameters": config.to_parameters(), "image_spec": config.image_spec().to_dict(),
            "split_name": data.split.name, "split_hash": data.split.content_hash,
            "label_version": data.label_version, "export": data.export.to_dict(),
            "status": "running", "started_at": now.isoformat(timespec="seconds"),
            "finished_at": None, "host": platform_node(), "tf_version": tensorflow().__version__,
            "metrics": None, "error": None,
        }
        return None, self.run_dir

    def started(self, run_dir: Path) -> None:
        _write_json(run_dir / RUN_FILE, self.record)

    def close(self, status: str, *, metrics: dict | None = None, error: str | None = None) -> None:
        self.record.update(status=status, metrics=metrics, error=error,
                           finished_at=utc_now().isoformat(timespec="seconds"))
        if self.run_dir.exists():
            _write_json(self.run_dir / RUN_FILE, self.record)

    def clean_up(self) -> None:
        pass


RUN_FILE = "run.json"  # a run trained from an export, as `bonedb runs import` records it


def platform_node() -> str:
    import platform

    return platform.node()[:255]


def _write_json(path: Path, data) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


class _Job:
    """One model's training, phase by phase, checkpointing as it goes."""

    def __init__(self, config: TrainConfig, data, run_dir: Path, progress, verbose, callbacks, resuming: bool,
                 stop: StopRequest):
        self.config, self.data, self.run_dir, self.resuming, self.stop = config, data, run_dir, resuming, stop
        self.progress, self.verbose, self.extra_callbacks = progress, verbose, callbacks
        self.backbone = get_backbone(config.arch)
        self.spec = config.image_spec()
        self.outputs = 1 if config.stage == FRACTURE else len(data.class_names)
        self.state_file = run_dir / "state.json"
        self.checkpoint = run_dir / "checkpoint.keras"
        self.role = cluster_role()
        self.shard_files: dict[str, list[str]] = {}  # subsets read from TFRecord shards: their files
        self.train_batches = 0  # this worker's training steps, over all epochs
        self.division: dict = {}  # several workers: how the training images were divided between them

    # -- data ---------------------------------------------------------------------------------
    def _decoded(self, subset: str):
        ds, examples, skipped = self._decoded_or_none(subset)
        if len(examples) and len(skipped) == len(examples):
            raise BonedbError(f"none of the {len(examples)} {subset} images could be read and decoded (the first: "
                              f"{skipped[0]}): restore the files, or find every missing one with `bonedb audit "
                              "dataset`")
        return ds, examples, skipped

    def _decoded_or_none(self, subset: str):
        examples = self.data.subsets[subset]
        export = self.data.export
        if export is not None and export.format == "tfrecord":
            return self._from_shards(export, subset, examples)
        if self.config.cache == "persistent" and examples.hashes is not None:
            ds, undecodable = persistent_dataset(examples, self.spec, self._cache_dir(), self.progress,
                                                 f"Decoding {subset} images", check=self.stop.check)
            return self._cached(ds), examples, [examples.paths[i] for i in undecodable]
        cache = {"memory": "memory", "persistent": "memory", "none": None,
                 "disk": str(self.run_dir / "cache" / f"{subset}.tfcache")}[self.config.cache]
        if self.role is not None:
            cache = None  # each worker caches its own part (see _divided)
        ds = decoded_dataset(examples, self.spec, cache=cache)
        seen = warm(ds, len(examples), self.progress, f"Decoding {subset} images", check=self.stop.check)
        skipped = [examples.paths[i] for i in range(len(examples)) if i not in seen]
        return ds, examples, skipped

    def _cached(self, ds):
        """DS cached in memory; with several workers not here: each caches its own part, in _divided (a
        cache first filled through a part of it would be left incomplete)."""
        return ds.cache() if self.config.cache != "none" and self.role is None else ds

    def _cache_dir(self) -> Path:
        return Path(self.config.cache_dir or Path(self.config.runs_dir) / "decoded-cache").absolute()

    def _from_shards(self, export, subset: str, examples: Examples):
        """Records of an export's shards; decoded shards are used as stored, so nothing is decoded."""
        from .tfrecords import shard_dataset

        self.shard_files[subset] = export.shards.get(subset, [])
        ds = shard_dataset(export.folder, self.shard_files[subset], examples.image_ids, self.spec,
                           export.stored_spec)
        ds = self._cached(ds)
        if export.stored_spec is not None:
            return ds, examples, []  # the export decoded every image, or it was not written
        seen = warm(ds, len(examples), self.progress, f"Decoding {subset} images")
        return ds, examples, [examples.paths[i] for i in range(len(examples)) if i not in seen]

    def _batches(self, ds, examples: Examples, *, training: bool, kept: int | None = None):
        if self.role is not None:
            return self._divided(ds, examples, training, kept)
        return self._batched(ds, examples, training, self.config.batch_size * _strategy().num_replicas_in_sync)

    def _divided(self, ds, examples: Examples, training: bool, kept: int | None):
        """Several workers: each its own part of the images, all the same number of batches (see cluster.py)."""
        tf = tensorflow()
        subset = "train" if training else "val"
        files = self.shard_files.get(subset, [])
        per_replica = self.config.batch_size

        def part(context):
            workers, me = context.num_input_pipelines, context.input_pipeline_id
            counts = [sum(1 for p in examples.paths if p.split("#")[0].endswith(tuple(files[w::workers])))
                      for w in range(workers)] if len(files) >= workers else [0]
            # Whole shards per worker (each reads only its own files) when that divides the images evenly
            # enough; else every N-th image, so that no worker's surplus is left out of every epoch.
            by_shards = min(counts) >= 0.9 * max(counts) > 0
            if by_shards:
                from .tfrecords import shard_dataset

                local = shard_dataset(self.data.export.folder, files[me::workers], examples.image_ids, self.spec,
                                      self.data.export.stored_spec)
            else:
                total = kept if kept is not None else len(examples)
                counts = [len(range(w, total, workers)) for w in range(workers)]
                local = ds.shard(workers, me)
            batch = context.get_per_replica_batch_size(per_replica * context.num_replicas_in_sync)
            if not training:  # a small validation part still gets scored, in smaller batches
                batch = max(1, min(batch, min(counts)))
            steps = divide(counts, batch)
            local = local.take(steps * batch)  # the same whole batches on every worker, every epoch
            if self.config.cache != "none":
                local = local.cache()
            if training:
                self.division = {"divided_by": "shards" if by_shards else "images",
                                 "images_per_epoch": steps * batch * workers}
            return self._batched(local, examples, training, batch, drop_remainder=True)

        options = tf.distribute.InputOptions(experimental_fetch_to_device=False)
        return _strategy().distribute_datasets_from_function(part, options)

    def _batched(self, ds, examples: Examples, training: bool, batch_size: int, drop_remainder: bool = False):
        tf = tensorflow()
        labels = tf.constant(np.asarray(examples.labels, np.float32 if self.outputs == 1 else np.int64))
        weights = tf.constant(np.asarray(sample_weights(examples, self.config.stage), np.float32))
        ds = ds.map(lambda i, x, _y: (x, tf.gather(labels, i), tf.gather(weights, i)),
                    num_parallel_calls=tf.data.AUTOTUNE)
        if training:
            ds = ds.shuffle(4096, seed=self.config.seed, reshuffle_each_iteration=True)
        # uint8 is shuffled and batched (a quarter of float32's bytes); whole batches become model inputs
        ds = ds.batch(batch_size, drop_remainder=drop_remainder)
        return ds.map(lambda x, y, w: (self.spec.model_input(x), y, w),
                      num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)

    # -- phases -------------------------------------------------------------------------------
    def run(self) -> tuple[dict, list[str]]:
        keras = _keras()
        train_ds, train_ex, skipped_train = self._decoded("train")
        val_ds, val_ex, skipped_val = self._decoded("val")
        state = self._state() if self.resuming else {}
        pretrained = self.config.weights != "none"
        phase = "finetune" if pretrained else "end_to_end"
        # Resume from the last epoch's checkpoint (model, optimizer and trainable flags) when there is one.
        resumed = state.get("phase") == phase and state.get("epoch", 0) > 0 and self.checkpoint.exists()
        history: dict[str, list] = state.get("history", {}) if resumed else {}
        with _strategy().scope():
            if resumed:
                model = keras.models.load_model(self.checkpoint)
            else:
                model = self._build()
                if pretrained:
                    history = self._phase_head(model, train_ds, train_ex, val_ds, val_ex)
                self._compile(model, phase)
            model.fit(
                self._batches(train_ds, train_ex, training=True, kept=len(train_ex) - len(skipped_train)),
                validation_data=self._batches(val_ds, val_ex, training=False, kept=len(val_ex) - len(skipped_val)),
                epochs=self.config.epochs, initial_epoch=state.get("epoch", 0) if resumed else 0,
                verbose=self.verbose, callbacks=self._callbacks(phase, history),
                shuffle=False,  # the tf.data pipeline shuffles; Keras would only warn that it cannot
            )
        model.save(self.run_dir / "model.keras")
        _write_json(self.run_dir / "history.json", history)
        if self.role is None:
            probabilities = model.predict(self._batches(val_ds, val_ex, training=False), verbose=0)
        else:  # every worker scores all of val on its own copy of the model: no collectives needed
            probabilities = np.concatenate([
                np.asarray(model(x, training=False)) for x, _y, _w in
                self._batched(val_ds, val_ex, False, self.config.batch_size)])
        kept = [i for i in range(len(val_ex)) if val_ex.paths[i] not in set(skipped_val)]
        metrics = self._metrics(val_ex.take(kept), probabilities)
        metrics["skipped_images"] = len(skipped_train) + len(skipped_val)
        return metrics, skipped_train + skipped_val

    def _build(self):
        weights = None if self.config.weights == "none" else self.config.weights
        try:
            return _build_classifier(self.backbone, self.config, self.outputs, weights)
        except BonedbError:
            raise
        except Exception as exc:  # Keras' download or weight-loading errors, made actionable
            raise _weights_error(self.backbone, self.config, weights, exc) from exc

    def _phase_head(self, model, train_ds, train_ex, val_ds, val_ex) -> dict:
        """Phase 1: the head alone, on the frozen backbone."""
        keras = _keras()
        model.get_layer("backbone").trainable = False
        epochs = self.config.head_epochs
        if not self.config.precompute:
            self._compile(model, "head")
            fit = model.fit(self._batches(train_ds, train_ex, training=True),
                            validation_data=self._batches(val_ds, val_ex, training=False),
                            epochs=epochs, verbose=self.verbose, callbacks=self._callbacks("head", {}, save=False),
                            shuffle=False)
            return {f"head_{k}": [float(v) for v in vs] for k, vs in fit.history.items()}
        from .models import feature_extractor, head_model

        extractor = feature_extractor(model)
        train_x = extractor.predict(self._plain(train_ds), verbose=0, callbacks=[stop_callback(self.stop)])
        val_x = extractor.predict(self._plain(val_ds), verbose=0, callbacks=[stop_callback(self.stop)])
        head = head_model(model)
        head.compile(optimizer=keras.optimizers.Adam(self.config.lr), loss=self._loss(), metrics=["accuracy"])
        train_y = np.asarray(train_ex.labels)[self._indices(train_ds)]
        weights = np.asarray(sample_weights(train_ex, self.config.stage))[self._indices(train_ds)]
        val_y = np.asarray(val_ex.labels)[self._indices(val_ds)]
        fit = head.fit(train_x, train_y, sample_weight=weights, validation_data=(val_x, val_y),
                       epochs=epochs, batch_size=self.config.batch_size, shuffle=True, verbose=self.verbose,
                       callbacks=[stop_callback(self.stop)])
        return {f"head_{k}": [float(v) for v in vs] for k, vs in fit.history.items()}

    def _plain(self, ds):
        tf = tensorflow()
        return ds.map(lambda i, x, y: self.spec.model_input(x), num_parallel_calls=tf.data.AUTOTUNE).batch(64)

    @staticmethod
    def _indices(ds) -> np.ndarray:
        return np.concatenate([i.numpy() for i, _x, _y in ds.batch(1024)])

    def _loss(self):
        return "binary_crossentropy" if self.outputs == 1 else "sparse_categorical_crossentropy"

    def _compile(self, model, phase: str) -> None:
        keras = _keras()
        lr = self.config.lr
        if phase == "finetune":
            from .models import unfreeze_top

            unfreeze_top(model, self.config.fine_tune_from)
            lr = self.config.lr / 10
        metrics = ["accuracy"] + ([keras.metrics.AUC(name="auc")] if self.outputs == 1 else [])
        model.compile(optimizer=keras.optimizers.Adam(lr), loss=self._loss(), metrics=metrics)

    def _callbacks(self, phase: str, history: dict, save: bool = True) -> list:
        keras = _keras()
        callbacks = [
            keras.callbacks.EarlyStopping(monitor="val_loss", patience=self.config.patience,
                                          restore_best_weights=True),
            keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.1,
                                              patience=max(1, self.config.patience // 2)),
            keras.callbacks.CSVLogger(str(self.run_dir / f"{phase}_log.csv"), append=True),
        ]
        if save:
            callbacks += [keras.callbacks.ModelCheckpoint(str(self.checkpoint)),
                          _StateWriter(self, phase, history), _BatchCounter(self)]
        if self.config.tensorboard:
            callbacks.append(keras.callbacks.TensorBoard(str(self.run_dir / "tensorboard" / phase)))
        return callbacks + self.extra_callbacks + [stop_callback(self.stop)]

    def _state(self) -> dict:
        return json.loads(self.state_file.read_text()) if self.state_file.exists() else {}

    def _save_state(self, phase: str, epoch: int, history: dict) -> None:
        _write_json(self.state_file, {"phase": phase, "epoch": epoch, "history": history})

    def _metrics(self, examples: Examples, probabilities) -> dict:
        if self.outputs == 1:
            return binary_metrics(examples.labels, np.asarray(probabilities).reshape(-1), examples.studies,
                                  with_intervals=False)
        return multiclass_metrics(examples.labels, probabilities, self.data.class_names)


def _state_writer_class():
    keras = _keras()

    class StateWriter(keras.callbacks.Callback):
        """After each epoch (and its checkpoint), note where training stands, for --resume."""

        def __init__(self, job: _Job, phase: str, history: dict):
            super().__init__()
            self.job, self.phase, self.history = job, phase, history

        def on_epoch_end(self, epoch, logs=None):
            for key, value in (logs or {}).items():
                self.history.setdefault(key, []).append(float(value))
            self.job._save_state(self.phase, epoch + 1, self.history)

    return StateWriter


def _BatchCounter(job):  # noqa: N802 (a callback factory, as _StateWriter)
    keras = _keras()

    class BatchCounter(keras.callbacks.Callback):
        """Counts this worker's training steps (with several workers: proof that each took part)."""

        def on_train_batch_end(self, batch, logs=None):
            job.train_batches += 1

    return BatchCounter()


def _StateWriter(job, phase, history):  # noqa: N802 (a callback factory: Keras loads only when training)
    return _state_writer_class()(job, phase, history)


def _strategy():
    """Several workers when TF_CONFIG describes a cluster, all local GPUs when there are several."""
    tf = tensorflow()
    if os.environ.get("TF_CONFIG"):
        return _cached_strategy("multi", tf.distribute.MultiWorkerMirroredStrategy)
    if len(tf.config.list_logical_devices("GPU")) > 1:
        return _cached_strategy("mirrored", tf.distribute.MirroredStrategy)
    return tf.distribute.get_strategy()


_STRATEGIES: dict = {}


def _cached_strategy(name, factory):
    if name not in _STRATEGIES:
        _STRATEGIES[name] = factory()
    return _STRATEGIES[name]


def _build_classifier(backbone, config: TrainConfig, outputs: int, weights):
    from .models import build_classifier

    return build_classifier(backbone, config.image_size, outputs, weights=weights, augment=config.augment)


def _weights_error(backbone, config: TrainConfig, weights, exc: Exception) -> BonedbError:
    filename = backbone.weights_filename(config.image_size)
    if weights == "imagenet":
        return BonedbError(
            f"cannot get ImageNet weights for {backbone.name} "
            f"({type(exc).__name__}: {_first_words(str(exc), 160)}); "
            f"on a machine with internet download {backbone.weights_url}{filename}, then run "
            f"`{import_command(backbone, config.image_size)}` here, or pass --weights PATH"
        )
    return BonedbError(f"weights file {weights} does not fit {backbone.name} at {config.image_size} px "
                       f"({_first_words(str(exc), 200)}): it must be Keras' no-top file {filename}")


def _first_words(text: str, limit: int) -> str:
    """The first line of TEXT, cut at a word boundary within LIMIT characters (never mid-word)."""
    line = (text.strip().splitlines() or [""])[0]
    if len(line) <= limit:
        return line
    return line[:limit].rsplit(" ", 1)[0].rstrip(" :;,-") + " ..."
