"""Two local CPU workers (TF_CONFIG, MultiWorkerMirroredStrategy) train one model from a synthetic export.

Both take part (each reports its training batches), only the chief keeps a run folder, the other
worker's scratch folder is gone, and the chief's model, once imported, learns the body part as well as
the single-worker tests require. The workers run under a hard timeout and are killed on any failure,
so a hung collective fails the test instead of CI.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from boneclf.ml.evaluation import evaluate_run
from boneclf.ml.run_import import import_run
from boneclf.ml.tfrecords import export_shards

TIMEOUT = 300  # seconds for both workers together; about a minute is usual


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_two_workers_train_one_model_recorded_once(learning_copy, tmp_path):
    engine, _folder = learning_copy
    exported = export_shards(engine, "s", tmp_path / "shards", stage="bodypart", image_size=32, shard_size=128)
    workers = [f"127.0.0.1:{port}" for port in free_ports(2)]
    bonedb = str(Path(sys.executable).parent / "bonedb")
    processes, scratch = [], []
    for index in range(2):
        scratch.append(tmp_path / f"tmp{index}")
        scratch[-1].mkdir()
        env = {**os.environ, "TMPDIR": str(scratch[-1]), "CUDA_VISIBLE_DEVICES": "",
               "TF_CONFIG": json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})}
        processes.append(subprocess.Popen(
            [bonedb, "--database-url", f"sqlite:///{tmp_path / 'none' / 'no.sqlite'}", "train", "--stage",
             "bodypart", "--from-export", str(tmp_path / "shards"), "--arch", "cnn", "--weights", "none",
             "--augment", "flip", "--no-tensorboard", "--epochs", "10", "--patience", "10", "--batch-size", "32", "--runs-dir",
             str(tmp_path / "runs"), "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True))
    outputs = []
    try:
        for process in processes:
            out, err = process.communicate(timeout=TIMEOUT)
            assert process.returncode == 0, err[-3000:]
            outputs.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, 9)  # SIGKILL: a worker stuck in a collective ignores SIGTERM
                process.wait()

    chief, other = outputs
    assert chief["cluster"]["chief"] and not other["cluster"]["chief"]
    assert chief["cluster"]["train_batches"] > 0 and other["cluster"]["train_batches"] == chief["cluster"][
        "train_batches"], "both took part, in step"
    # Whole shards per worker when they split evenly, else every other image: either way nearly every image.
    assert chief["cluster"]["divided_by"] in ("shards", "images")
    assert chief["cluster"]["images_per_epoch"] > exported.per_subset["train"] - 2 * 32
    assert [p.name for p in (tmp_path / "runs").iterdir()] == [Path(chief["artifact_dir"]).name]
    assert other["artifact_dir"] == "" and not any(scratch[1].iterdir()), "the other worker cleaned up"

    run = import_run(engine, chief["artifact_dir"])
    assert evaluate_run(engine, run.id, "test").overall.accuracy >= 0.95


def test_cluster_roles_from_tf_config(monkeypatch):
    import pytest

    from boneclf.errors import BonedbError
    from boneclf.ml.cluster import Role, cluster_role, divide

    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert cluster_role() is None
    cluster = {"worker": ["a:1", "b:1"]}
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 1}}))
    assert cluster_role() == Role(workers=2, index=1, chief=False)
    cluster = {"chief": ["c:1"], "worker": ["a:1", "b:1"]}
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 0}}))
    assert cluster_role() == Role(workers=3, index=1, chief=False)
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "chief", "index": 0}}))
    assert cluster_role() == Role(workers=3, index=0, chief=True)
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(BonedbError, match="TF_CONFIG is not TensorFlow's cluster description"):
        cluster_role()
    assert divide([70, 64], 16) == 4
    with pytest.raises(BonedbError, match="less than a batch of 16"):
        divide([70, 9], 16)


def test_the_keras_internals_that_multi_worker_training_mends_are_as_written_for():
    """cluster.py replaces private functions of Keras' TensorFlow trainer; pyproject.toml bounds Keras to the
    version it was written for. On another Keras this fails and says what changed."""
    import keras

    from boneclf.ml.cluster import PATCHED_KERAS, internals_changed

    changed = internals_changed()
    assert not changed, (f"Keras {keras.__version__} changed the private trainer internals that "
                         f"boneclf/ml/cluster.py patches for multi-worker training: {'; '.join(changed)}. "
                         "Rewrite the patch for it, then move the bounds in pyproject.toml")
    assert keras.__version__.startswith(PATCHED_KERAS + "."), (
        f"Keras {keras.__version__} is installed, but cluster.py's patch was written for Keras {PATCHED_KERAS}: "
        "run the multi-worker test on it, then update PATCHED_KERAS and the bounds in pyproject.toml")


def test_a_changed_keras_internal_is_refused_by_name(monkeypatch):
    import pytest
    from keras.src.backend.tensorflow import trainer as keras_trainer

    from boneclf.errors import BonedbError
    from boneclf.ml import cluster

    monkeypatch.setattr(keras_trainer, "reduce_per_replica", lambda values, strategy: values)
    monkeypatch.delattr(keras_trainer, "_collective_all_reduce_multi_worker")
    monkeypatch.setattr(cluster, "_PATCHED", False)
    changed = cluster.internals_changed()
    assert changed == ["reduce_per_replica now takes (values, strategy), not (values, strategy, reduction)",
                       "_collective_all_reduce_multi_worker is gone"]
    with pytest.raises(BonedbError, match=r"changed it \(reduce_per_replica now takes .*install keras<3.16"):
        cluster.patch_keras_for_multi_worker()
