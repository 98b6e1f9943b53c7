"""The Keras loop of one run: its images decoded and batched, its phases fitted, checkpointed as it goes.

Pretrained backbones follow the Keras transfer-learning recipe: phase 1 trains the head on the
frozen backbone (by default on features computed once, which on a CPU turns hours into minutes),
phase 2 unfreezes the top of the backbone and trains on at a tenth of the learning rate with
BatchNorm kept in inference mode. A backbone without pretrained weights (the custom CNN, or
--weights none) trains end to end in one phase.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from boneclf.errors import BonedbError
from boneclf.files import atomic_path
from boneclf.progress import ProgressFactory
from boneclf.scores import StageMetrics
from boneclf.vocabulary import FRACTURE

from .backbones import Backbone, get_backbone
from .cluster import Role, cluster_role, divide
from .interrupts import StopRequest, stop_callback
from .metrics import binary_metrics, multiclass_metrics
from .pipeline import Examples, decoded_dataset, persistent_dataset, warm
from .run_folder import CHECKPOINT_FILE, DECODED_CACHE, RunFolder, write_json
from .tf_env import keras as _keras
from .tf_env import tensorflow
from .train_config import TrainConfig
from .training_data import StageData, sample_weights
from .weights import import_command

# Datasets that skip undecodable files have no known length, so Keras notes the end of every
# epoch as "running out of data"; that is expected here, not a problem to show users.
warnings.filterwarnings("ignore", message="Your input ran out of data")


class Decoded(NamedTuple):
    """A subset's images as a dataset of (index, uint8 picture, label), and the files that did not decode."""

    ds: Any  # tf.data.Dataset
    examples: Examples
    skipped: list[str]

    @property
    def kept(self) -> int:
        return len(self.examples) - len(self.skipped)


@dataclass
class Division:
    """Several workers: how the training images were divided between them (see cluster.py)."""

    divided_by: str = ""  # shards or images
    images_per_epoch: int = 0


class Feed:
    """A run's images, decoded once (or read from an export's shards), then batched for Keras; with several
    workers each reads its own part."""

    def __init__(self, config: TrainConfig, data: StageData, folder: RunFolder, progress: ProgressFactory,
                 stop: StopRequest, role: Role | None):
        self.config, self.data, self.folder, self.progress, self.stop, self.role = \
            config, data, folder, progress, stop, role
        self.spec = config.image_spec()
        self.outputs = 1 if config.stage == FRACTURE else len(data.class_names)
        self.shard_files: dict[str, list[str]] = {}  # subsets read from TFRecord shards: their files
        self.division: Division | None = None

    # -- decoding -----------------------------------------------------------------------------
    def decoded(self, subset: str) -> Decoded:
        found = self._decoded_or_none(subset)
        if len(found.examples) and found.kept == 0:
            raise BonedbError(f"none of the {len(found.examples)} {subset} images could be read and decoded (the "
                              f"first: {found.skipped[0]}): restore the files, or find every missing one with "
                              "`bonedb audit dataset`")
        return found

    def _decoded_or_none(self, subset: str) -> Decoded:
        examples = self.data.subsets[subset]
        export = self.data.export
        if export is not None and export.format == "tfrecord":
            return self._from_shards(subset, examples)
        if self.config.cache == "persistent" and examples.hashes is not None:
            ds, undecodable = persistent_dataset(examples, self.spec, self._cache_dir(), self.progress,
                                                 f"Decoding {subset} images", check=self.stop.check)
            return Decoded(self._cached(ds), examples, [examples.paths[i] for i in undecodable])
        cache = {"memory": "memory", "persistent": "memory", "none": None,
                 "disk": str(self.folder.tf_cache(subset))}[self.config.cache]
        if self.role is not None:
            cache = None  # each worker caches its own part (see _divided)
        ds = decoded_dataset(examples, self.spec, cache=cache)
        seen = warm(ds, len(examples), self.progress, f"Decoding {subset} images", check=self.stop.check)
        return Decoded(ds, examples, [examples.paths[i] for i in range(len(examples)) if i not in seen])

    def _cached(self, ds):
        """DS cached in memory; with several workers not here: each caches its own part, in _divided (a
        cache first filled through a part of it would be left incomplete)."""
        return ds.cache() if self.config.cache != "none" and self.role is None else ds

    def _cache_dir(self) -> Path:
        return Path(self.config.cache_dir or Path(self.config.runs_dir) / DECODED_CACHE).absolute()

    def _from_shards(self, subset: str, examples: Examples) -> Decoded:
        """Records of an export's shards; decoded shards are used as stored, so nothing is decoded."""
        from .tfrecords import shard_dataset

        export = self.data.export
        assert export is not None
        self.shard_files[subset] = export.shards.get(subset, [])
        ds = shard_dataset(export.folder, self.shard_files[subset], examples.image_ids, self.spec,
                           export.stored_spec)
        ds = self._cached(ds)
        if export.stored_spec is not None:
            return Decoded(ds, examples, [])  # the export decoded every image, or it was not written
        seen = warm(ds, len(examples), self.progress, f"Decoding {subset} images")
        return Decoded(ds, examples, [examples.paths[i] for i in range(len(examples)) if i not in seen])

    # -- batching -----------------------------------------------------------------------------
    def batches(self, subset: Decoded, *, training: bool, whole: bool = True):
        """(model input, label, sample weight) batches of SUBSET. WHOLE: only the images that decoded are
        counted (a worker's part is then known exactly)."""
        if self.role is not None:
            return self._divided(subset, training, subset.kept if whole else None)
        size = self.config.batch_size * strategy().num_replicas_in_sync
        ds = self.batched(subset.ds, subset.examples, training, size)
        if whole and self.config.cache != "none":
            # Skipping undecodable files leaves the length unknown to Keras ("91/Unknown" in the first epoch's
            # bar); from a cache the decodable ones are exactly those counted when it was filled.
            ds = ds.apply(tensorflow().data.experimental.assert_cardinality(math.ceil(subset.kept / size)))
        return ds

    def _divided(self, subset: Decoded, training: bool, kept: int | None):
        """Several workers: each its own part of the images, all the same number of batches (see cluster.py)."""
        tf = tensorflow()
        files = self.shard_files.get("train" if training else "val", [])
        examples = subset.examples

        def part(context):
            workers, me = context.num_input_pipelines, context.input_pipeline_id
            counts = [sum(1 for p in examples.paths if p.split("#")[0].endswith(tuple(files[w::workers])))
                      for w in range(workers)] if len(files) >= workers else [0]
            # Whole shards per worker (each reads only its own files) when that divides the images evenly
            # enough; else every N-th image, so that no worker's surplus is left out of every epoch.
            by_shards = min(counts) >= 0.9 * max(counts) > 0
            if by_shards:
                local = self._worker_shards(files[me::workers], examples)
            else:
                total = kept if kept is not None else len(examples)
                counts = [len(range(w, total, workers)) for w in range(workers)]
                local = subset.ds.shard(workers, me)
            batch = context.get_per_replica_batch_size(self.config.batch_size * context.num_replicas_in_sync)
            if not training:  # a small validation part still gets scored, in smaller batches
                batch = max(1, min(batch, min(counts)))
            steps = divide(counts, batch)
            local = local.take(steps * batch)  # the same whole batches on every worker, every epoch
            if self.config.cache != "none":
                local = local.cache()
            if training:
                self.division = Division("shards" if by_shards else "images", steps * batch * workers)
            return self.batched(local, examples, training, batch, drop_remainder=True)

        options = tf.distribute.InputOptions(experimental_fetch_to_device=False)
        return strategy().distribute_datasets_from_function(part, options)

    def _worker_shards(self, files: list[str], examples: Examples):
        from .tfrecords import shard_dataset

        export = self.data.export
        assert export is not None
        return shard_dataset(export.folder, files, examples.image_ids, self.spec, export.stored_spec)

    def batched(self, ds, examples: Examples, training: bool, batch_size: int, drop_remainder: bool = False):
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

    def inputs(self, subset: Decoded):
        """Model inputs alone, in the subset's order (features for the frozen backbone)."""
        tf = tensorflow()
        return subset.ds.map(lambda i, x, y: self.spec.model_input(x), num_parallel_calls=tf.data.AUTOTUNE).batch(64)

    @staticmethod
    def indices(subset: Decoded) -> np.ndarray:
        """The examples' indices in the subset's dataset order."""
        return np.concatenate([i.numpy() for i, _x, _y in subset.ds.batch(1024)])


class Job:
    """One model's training, phase by phase, checkpointing as it goes."""

    def __init__(self, config: TrainConfig, data: StageData, run_dir: Path, progress: ProgressFactory, verbose,
                 callbacks: list, resuming: bool, stop: StopRequest):
        self.config, self.data, self.resuming, self.stop = config, data, resuming, stop
        self.folder = RunFolder(run_dir)
        self.verbose, self.extra_callbacks = verbose, callbacks
        self.backbone = get_backbone(config.architecture)
        self.role = cluster_role()
        self.feed = Feed(config, data, self.folder, progress, stop, self.role)
        self.outputs = self.feed.outputs
        self.train_batches = 0  # this worker's training steps, over all epochs
        self.notes: list[str] = []  # what a person should know about how the run went (a fallback on resume)

    @property
    def division(self) -> dict:
        return {} if self.feed.division is None else {"divided_by": self.feed.division.divided_by,
                                                      "images_per_epoch": self.feed.division.images_per_epoch}

    def run(self) -> tuple[StageMetrics, list[str]]:
        """Train to the end (or on from the last checkpoint); (validation metrics, files that did not decode)."""
        train, val = self.feed.decoded("train"), self.feed.decoded("val")
        phase = "finetune" if self.config.weights != "none" else "end_to_end"
        with strategy().scope():
            # Resume from the last epoch's checkpoint (model, optimizer and trainable flags) when there is one.
            point = self._resume_point(phase) if self.resuming else None
            if point is not None:
                model, history, initial_epoch = point
            else:
                (model, history), initial_epoch = self._fresh_model(phase, train, val), 0
            model.fit(self.feed.batches(train, training=True),
                      validation_data=self.feed.batches(val, training=False),
                      epochs=self.config.epochs, initial_epoch=initial_epoch,
                      verbose=self.verbose, callbacks=self._callbacks(phase, history),
                      shuffle=False)  # the tf.data pipeline shuffles; Keras would only warn that it cannot
        model.save(self.folder.model)
        write_json(self.folder.history, history)
        metrics = self._validation_metrics(model, val)
        metrics.skipped_images = len(train.skipped) + len(val.skipped)
        return metrics, train.skipped + val.skipped

    def _fresh_model(self, phase: str, train: Decoded, val: Decoded) -> tuple[Any, dict]:
        """A new model, its head trained first on a pretrained backbone, compiled for PHASE."""
        model = self._build()
        history = self._phase_head(model, train, val) if self.config.weights != "none" else {}
        self._compile(model, phase)
        return model, history

    def _validation_metrics(self, model, val: Decoded) -> StageMetrics:
        if self.role is None:
            probabilities = model.predict(self.feed.batches(val, training=False, whole=False), verbose=0)
        else:  # every worker scores all of val on its own copy of the model: no collectives needed
            probabilities = np.concatenate([
                np.asarray(model(x, training=False)) for x, _y, _w in
                self.feed.batched(val.ds, val.examples, False, self.config.batch_size)])
        skipped = set(val.skipped)
        kept = [i for i in range(len(val.examples)) if val.examples.paths[i] not in skipped]
        return self._metrics(val.examples.take(kept), probabilities)

    def _build(self):
        weights = None if self.config.weights == "none" else self.config.weights
        try:
            from .models import build_classifier

            return build_classifier(self.backbone, self.config.size, self.outputs, weights=weights,
                                    augment=self.config.augment)
        except BonedbError:
            raise
        except Exception as exc:  # Keras' download or weight-loading errors, made actionable
            raise weights_error(self.backbone, self.config.size, weights, exc) from exc

    def _phase_head(self, model, train: Decoded, val: Decoded) -> dict:
        """Phase 1: the head alone, on the frozen backbone."""
        model.get_layer("backbone").trainable = False
        if not self.config.precompute:
            self._compile(model, "head")
            fit = model.fit(self.feed.batches(train, training=True, whole=False),
                            validation_data=self.feed.batches(val, training=False, whole=False),
                            epochs=self.config.head_epochs, verbose=self.verbose,
                            callbacks=self._callbacks("head", {}, save=False), shuffle=False)
        else:
            fit = self._head_on_features(model, train, val)
        return {f"head_{k}": [float(v) for v in vs] for k, vs in fit.history.items()}

    def _head_on_features(self, model, train: Decoded, val: Decoded):
        """Phase 1 on the backbone's features, computed once: the head alone is fitted."""
        from .models import feature_extractor, head_model

        extractor = feature_extractor(model)
        train_x = extractor.predict(self.feed.inputs(train), verbose=0, callbacks=[stop_callback(self.stop)])
        val_x = extractor.predict(self.feed.inputs(val), verbose=0, callbacks=[stop_callback(self.stop)])
        head = head_model(model)
        head.compile(optimizer=_keras().optimizers.Adam(self.config.lr), loss=self._loss(), metrics=["accuracy"])
        train_order, val_order = Feed.indices(train), Feed.indices(val)
        train_y = np.asarray(train.examples.labels)[train_order]
        weights = np.asarray(sample_weights(train.examples, self.config.stage))[train_order]
        val_y = np.asarray(val.examples.labels)[val_order]
        return head.fit(train_x, train_y, sample_weight=weights, validation_data=(val_x, val_y),
                        epochs=self.config.head_epochs, batch_size=self.config.batch_size, shuffle=True,
                        verbose=self.verbose, callbacks=[stop_callback(self.stop)])

    def _loss(self) -> str:
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
            keras.callbacks.CSVLogger(str(self.folder.log(phase)), append=True),
        ]
        if save:
            callbacks += [checkpointer(self, phase, history), batch_counter(self)]
        if self.config.tensorboard:
            callbacks.append(keras.callbacks.TensorBoard(str(self.folder.tensorboard(phase))))
        return callbacks + self.extra_callbacks + [stop_callback(self.stop)]

    def _state(self) -> dict:
        return json.loads(self.folder.state.read_text()) if self.folder.state.exists() else {}

    def save_checkpoint(self, model, phase: str, epoch: int, history: dict) -> None:
        """The model after EPOCH, written whole under its own name; then state.json names it and the one
        before it (a crash at any point leaves a readable checkpoint that state.json names)."""
        newest = self.folder.checkpoint(epoch)
        with atomic_path(newest, suffix=".keras") as temporary:
            model.save(temporary)
        state = self._state()
        previous = {"checkpoint": CHECKPOINT_FILE, **{k: state[k] for k in ("phase", "epoch", "history", "checkpoint")
                                                      if k in state}} if state.get("epoch") else None
        write_json(self.folder.state, {"phase": phase, "epoch": epoch, "history": history,
                                       "checkpoint": newest.name, "previous": previous})
        kept = {newest.name, (previous or {}).get("checkpoint")}
        for old in self.folder.path.glob("checkpoint*.keras"):
            if old.name not in kept:
                old.unlink(missing_ok=True)

    def _resume_point(self, phase: str) -> tuple[Any, dict, int] | None:
        """(model, history, epoch) of the newest checkpoint that loads, or None when there is none to resume
        (another phase, or no epoch finished). A torn newest checkpoint falls back to the one before, noted."""
        state = self._state()
        if state.get("phase") != phase or state.get("epoch", 0) <= 0:
            return None
        unreadable = []
        for point in (state, state.get("previous")):
            if not point or point.get("phase") != phase or point.get("epoch", 0) <= 0:
                continue
            path = self.folder.path / point.get("checkpoint", CHECKPOINT_FILE)
            try:
                model = _keras().models.load_model(path)
            except Exception as exc:  # a torn or missing file: Keras raises what its zip reader or loader meets
                unreadable.append(f"{path} ({type(exc).__name__}: {_first_words(str(exc), 120)})")
                continue
            if unreadable:
                self.notes.append(f"the newest checkpoint {unreadable[0]} could not be read: resumed from the one "
                                  f"before it, after epoch {point['epoch']}")
                write_json(self.folder.state, {**point, "previous": None})  # the torn one is overwritten next
            return model, point.get("history", {}), point["epoch"]
        raise BonedbError(f"no checkpoint of this run can be read ({'; '.join(unreadable)}): delete the run with "
                          "`bonedb runs delete RUN` and train it again")

    def _metrics(self, examples: Examples, probabilities) -> StageMetrics:
        if self.outputs == 1:
            return binary_metrics(examples.labels, np.asarray(probabilities).reshape(-1), examples.studies,
                                  with_intervals=False)
        return multiclass_metrics(examples.labels, probabilities, self.data.class_names)


# -- callbacks (classes made when Keras is loaded: importing this module does not load it) -----------


def checkpointer(job: Job, phase: str, history: dict):
    """After each epoch, the model and where training stands, for --resume."""
    callback: Any = _keras().callbacks.Callback

    class Checkpointer(callback):
        def on_epoch_end(self, epoch, logs=None):
            for key, value in (logs or {}).items():
                history.setdefault(key, []).append(float(value))
            job.save_checkpoint(self.model, phase, epoch + 1, history)

    return Checkpointer()


def batch_counter(job: Job):
    """Counts this worker's training steps (with several workers: proof that each took part)."""
    callback: Any = _keras().callbacks.Callback

    class BatchCounter(callback):
        def on_train_batch_end(self, batch, logs=None):
            job.train_batches += 1

    return BatchCounter()


# -- distribution --------------------------------------------------------------------------------


def strategy():
    """Several workers when TF_CONFIG describes a cluster, all local GPUs when there are several."""
    tf = tensorflow()
    if os.environ.get("TF_CONFIG"):
        return _cached_strategy("multi", tf.distribute.MultiWorkerMirroredStrategy)
    if len(tf.config.list_logical_devices("GPU")) > 1:
        return _cached_strategy("mirrored", tf.distribute.MirroredStrategy)
    return tf.distribute.get_strategy()


_STRATEGIES: dict[str, Any] = {}


def _cached_strategy(name: str, factory):
    if name not in _STRATEGIES:
        _STRATEGIES[name] = factory()
    return _STRATEGIES[name]


# -- errors --------------------------------------------------------------------------------------


def weights_error(backbone: Backbone, image_size: int, weights: str | None, exc: Exception) -> BonedbError:
    filename = backbone.weights_filename(image_size)
    if weights == "imagenet":
        return BonedbError(
            f"cannot get ImageNet weights for {backbone.name} "
            f"({type(exc).__name__}: {_first_words(str(exc), 160)}); "
            f"on a machine with internet download {backbone.weights_url}{filename}, then run "
            f"`{import_command(backbone, image_size)}` here, or pass --weights PATH"
        )
    return BonedbError(f"weights file {weights} does not fit {backbone.name} at {image_size} px "
                       f"({_first_words(str(exc), 200)}): it must be Keras' no-top file {filename}")


def _first_words(text: str, limit: int) -> str:
    """The first line of TEXT, cut at a word boundary within LIMIT characters (never mid-word)."""
    line = (text.strip().splitlines() or [""])[0]
    if len(line) <= limit:
        return line
    return line[:limit].rsplit(" ", 1)[0].rstrip(" :;,-") + " ..."
