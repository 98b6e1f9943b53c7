"""Several workers from TF_CONFIG: who is the chief, and how the training data is divided between workers.

TF_CONFIG is TensorFlow's own description of a cluster (one per host, the same `cluster`, its own
`task`). Under MultiWorkerMirroredStrategy every worker runs the same training; gradients are summed
with collectives at every step, so every worker must run the same number of steps or the collective
waits forever. Each worker therefore reads its own part of the data (whole TFRecord shards when there
are at least as many shards as workers, else every N-th image) and all stop after the number of
batches the smallest part holds. Only the chief records the run and keeps its files.
"""

from __future__ import annotations

import inspect
import json
import os
from dataclasses import dataclass

from boneclf.errors import BonedbError


@dataclass(frozen=True)
class Role:
    workers: int  # every task that trains: the chief (if named) and the workers
    index: int  # this task's place among them (the chief first)
    chief: bool


def cluster_role() -> Role | None:
    """This process's role in the TF_CONFIG cluster, or None without one."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return None
    try:
        config = json.loads(raw)
        cluster, task = config["cluster"], config["task"]
        chiefs, workers = list(cluster.get("chief", [])), list(cluster.get("worker", []))
        kind, index = task["type"], int(task["index"])
    except (ValueError, KeyError, TypeError) as exc:
        raise BonedbError(f"TF_CONFIG is not TensorFlow's cluster description ({exc}): it needs "
                          '{"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", "index": 0}}'
                          ) from None
    if kind not in ("chief", "worker"):
        raise BonedbError(f"TF_CONFIG task type {kind!r}: bonedb trains with chief and worker tasks only")
    place = index if kind == "chief" else len(chiefs) + index
    return Role(workers=len(chiefs) + len(workers), index=place,
                chief=kind == "chief" or (not chiefs and index == 0))


def divide(count_of_part: list[int], batch_size: int) -> int:
    """Batches every worker runs per epoch: what the smallest part holds (whole batches only)."""
    steps = min(count_of_part) // batch_size
    if steps < 1:
        raise BonedbError(f"one worker's part holds {min(count_of_part)} images, less than a batch of {batch_size}: "
                          "use fewer workers, a smaller --batch-size, or export with a smaller --shard-size")
    return steps


_PATCHED = False
# The Keras whose private trainer (keras.src.backend.tensorflow.trainer) the patch below was written and
# tested against; pyproject.toml bounds Keras and TensorFlow to it, and internals_changed() checks it.
PATCHED_KERAS = "3.15"


def internals_changed() -> list[str]:
    """What no longer holds of the Keras internals patch_keras_for_multi_worker replaces (empty: all holds)."""
    try:
        from keras.src.backend.tensorflow import trainer as keras_trainer
    except ImportError as exc:
        return [f"keras.src.backend.tensorflow.trainer cannot be imported ({exc})"]
    problems = []
    trainer = getattr(keras_trainer, "TensorFlowTrainer", None)
    expected = {
        "TensorFlowTrainer._maybe_symbolic_build": (getattr(trainer, "_maybe_symbolic_build", None),
                                                    ["self", "iterator", "data_batch"]),
        "TensorFlowTrainer._symbolic_build": (getattr(trainer, "_symbolic_build", None),
                                              ["self", "iterator", "data_batch"]),
        "reduce_per_replica": (getattr(keras_trainer, "reduce_per_replica", None), ["values", "strategy", "reduction"]),
        "_collective_all_reduce_multi_worker": (getattr(keras_trainer, "_collective_all_reduce_multi_worker", None),
                                                ["strategy"]),
    }
    for name, (function, parameters) in expected.items():
        if function is None:
            problems.append(f"{name} is gone")
        elif list(inspect.signature(function).parameters) != parameters:
            problems.append(f"{name} now takes {inspect.signature(function)}, not ({', '.join(parameters)})")
    if trainer is not None and not problems:
        # The replacement of reduce_per_replica takes effect only while the step functions look it up by name.
        if "reduce_per_replica(" not in inspect.getsource(trainer._make_function):
            problems.append("TensorFlowTrainer._make_function no longer calls the module's reduce_per_replica")
        if "_distribute_strategy" not in inspect.getsource(trainer._maybe_symbolic_build):
            problems.append("TensorFlowTrainer._maybe_symbolic_build no longer reads self._distribute_strategy")
    return problems


def patch_keras_for_multi_worker() -> None:
    """Two defects of Keras 3 (3.15) under MultiWorkerMirroredStrategy, mended in place (idempotent).

    It builds a model's metrics from the first batch before training; under this strategy that batch
    holds per-replica values, which its check misses, so fit fails with "Attempt to convert a value
    (PerReplica...)": build from this worker's first replica's batch instead (the shapes are all the
    build needs; no collective runs)."""
    global _PATCHED
    if _PATCHED:
        return
    changed = internals_changed()
    if changed:
        import keras

        raise BonedbError(f"multi-worker training patches Keras {PATCHED_KERAS}'s private trainer, and Keras "
                          f"{keras.__version__} changed it ({'; '.join(changed)}): install keras<3.16 "
                          "(as pyproject.toml bounds it), or train on one worker")
    from keras.src.backend.tensorflow.trainer import TensorFlowTrainer

    from .tf_env import tensorflow

    tf = tensorflow()
    original = TensorFlowTrainer._maybe_symbolic_build

    def symbolic_build(self, iterator=None, data_batch=None):
        if self._distribute_strategy is None or iterator is None:
            return original(self, iterator, data_batch)
        strategy = self.distribute_strategy
        for _, _, it in iterator:
            data_batch = tf.nest.map_structure(
                lambda x: strategy.experimental_local_results(x)[0]
                if isinstance(x, tf.distribute.DistributedValues) else x, next(it))
            break
        with self.distribute_strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    TensorFlowTrainer._maybe_symbolic_build = symbolic_build

    # Its step results (loss and metrics, scalars) are then averaged across workers with axis=0, which a
    # scalar does not have ("Invalid reduction dimension 0"): average them as scalars, across replicas.
    from keras.src.backend.tensorflow import trainer as keras_trainer

    reduce_per_replica = keras_trainer.reduce_per_replica

    def reduce(values, strategy, reduction="auto"):
        if reduction in ("auto", "mean") and keras_trainer._collective_all_reduce_multi_worker(strategy):
            return tf.nest.map_structure(
                lambda v: strategy.reduce("MEAN", v, axis=None if v.shape.rank == 0 else 0), values)
        return reduce_per_replica(values, strategy, reduction)

    keras_trainer.reduce_per_replica = reduce
    _PATCHED = True
