"""Real TensorFlow training on small synthetic data: it learns, and it fails to learn shuffled labels.

Small images (64 px, 32 px for the plumbing), the from-scratch CNN, and a few hundred images:
minutes on two CPU cores.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from sqlalchemy import select

from boneclf.cli.main import cli
from boneclf.data.ingest import ingest_mura
from boneclf.data.splits import SplitOptions, create_split, delete_split
from boneclf.data.synth import synth_mura
from boneclf.errors import BonedbError
from boneclf.ml.backbones import REGISTRY, build_backbone, get_backbone
from boneclf.ml.evaluation import evaluate_run
from boneclf.ml.models import build_classifier
from boneclf.ml.tf_env import keras as _keras
from boneclf.ml.training import TrainConfig, resume, train
from boneclf.store.runs import get_run, list_runs
from boneclf.store.schema import TrainingRun
from boneclf.vocabulary import BODY_PARTS

from conftest import FAST, synth_sqlite
from conftest import prepare_synth_split as _prepare


@pytest.fixture(scope="module")
def small_db(tmp_path_factory):
    """A small set at 32 px for plumbing tests."""
    folder = tmp_path_factory.mktemp("small")
    engine = synth_sqlite(folder, 40, 32)
    yield engine, folder
    engine.dispose()


def test_stage1_learns_the_body_part(trained):
    result = evaluate_run(trained.engine, trained.bodypart_run, "test")
    assert result.overall.accuracy >= 0.95, result.overall.confusion


def test_stage2_learns_breaks_and_not_shuffled_labels(trained, tmp_path):
    learned = evaluate_run(trained.engine, trained.fracture_run, "test").overall
    assert learned.image.accuracy >= 0.85
    assert learned.study.kappa >= 0.7

    control = synth_sqlite(tmp_path, 300, 64, shuffled=True)
    config = replace(trained.fracture_config, runs_dir=str(tmp_path / "runs"))
    [run] = train(control, config, verbose=0)
    chance = evaluate_run(control, run.run_id, "test").overall
    assert chance.image.accuracy < 0.75, chance.image
    assert chance.study.kappa < 0.3
    control.dispose()


@pytest.mark.parametrize("arch", list(REGISTRY))
def test_every_architecture_builds_trains_a_step_and_round_trips(arch, tmp_path):
    keras = _keras()
    backbone = get_backbone(arch)
    size = max(32, backbone.min_size)
    model = build_classifier(backbone, size, 1, weights=None, augment="paper")
    # Eagerly: tracing DenseNet-169's training step into a graph took 148 s of this test's 160 on the CI machine,
    # and one step proves as much eagerly (`bonedb train` itself runs traced, in every training test).
    model.compile(optimizer="adam", loss="binary_crossentropy", run_eagerly=True)
    images = np.random.default_rng(0).uniform(0, 255, (2, size, size, 3)).astype("float32")
    loss = model.train_on_batch(images, np.array([0.0, 1.0]))
    assert np.isfinite(loss)
    assert model.get_layer("backbone").get_layer(backbone.gradcam_layer) is not None
    path = tmp_path / f"{arch}.keras"
    model.save(path)
    from boneclf.ml import layers  # noqa: F401

    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(np.asarray(loaded(images, training=False)), np.asarray(model(images, training=False)),
                               atol=1e-5)


def test_interrupted_run_resumes_to_the_end(small_db):
    engine, folder = small_db
    keras = _keras()

    class StopAfterTwo(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise KeyboardInterrupt

    config = TrainConfig(stage="bodypart", split="s", image_size=32, epochs=4, patience=10,
                         runs_dir=str(folder / "runs"), **FAST)
    with pytest.raises(KeyboardInterrupt):
        train(engine, config, verbose=0, callbacks=[StopAfterTwo()])
    run = list_runs(engine)[-1]
    assert run.status == "interrupted" and "--resume" in run.error
    state = json.loads((Path(run.artifact_dir) / "state.json").read_text())
    assert state["epoch"] == 2

    result = resume(engine, run.id, verbose=0)
    assert result.status == "finished" and get_run(engine, run.id).status == "finished"
    history = json.loads((Path(run.artifact_dir) / "history.json").read_text())
    assert len(history["loss"]) == 4, "two epochs before the interruption, two after"
    with pytest.raises(BonedbError, match="already finished"):
        resume(engine, run.id, verbose=0)


def test_run_is_recorded_and_protects_its_split(engine, tmp_path):
    _prepare(engine, tmp_path / "data", 30, 32)
    [result] = train(engine, TrainConfig(stage="fracture", split="s", shared=True, image_size=32, epochs=1,
                                         runs_dir=str(tmp_path / "runs"), **FAST), verbose=0)
    with engine.connect() as conn:
        row = conn.execute(select(TrainingRun.__table__)).one()
    assert row.status == "finished" and row.stage == "fracture" and row.architecture == "cnn"
    assert row.split_name == "s" and len(row.split_hash) == 64 and row.finished_at >= row.started_at
    assert row.parameters["image_size"] == 32 and row.tf_version
    assert row.image_spec == {"size": 32, "pad": False, "canny": False, "channels": 3, "normalization": "unit"}
    assert "image" in row.metrics
    folder = Path(row.artifact_dir)
    assert {"model.keras", "class_names.json", "history.json", "config.json"} <= {p.name for p in folder.iterdir()}
    with pytest.raises(BonedbError, match="cannot be deleted"):
        delete_split(engine, "s")


def test_per_part_stage2_and_json_lines(small_db, tmp_path):
    engine, folder = small_db
    url = engine.url.render_as_string(hide_password=False)
    result = CliRunner().invoke(cli, [
        "--database-url", url, "train", "--stage", "fracture", "--split", "s", "--parts", "shoulder,wrist",
        "--arch", "cnn", "--weights", "none", "--image-size", "32", "--epochs", "1", "--augment", "flip",
        "--no-tensorboard", "--runs-dir", str(tmp_path / "runs"), "--json"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.output.strip().splitlines()]
    assert [line["parts"] for line in lines] == [["shoulder"], ["wrist"]]
    assert all(line["status"] == "finished" and "image" in line["metrics"] for line in lines)


def test_pretrained_path_precomputes_features_then_fine_tunes(small_db, tmp_path):
    """Phase 1 on precomputed features, phase 2 fine-tuning, with a local weights file (no internet)."""
    engine, folder = small_db
    weights = tmp_path / "mobilenet_notop.weights.h5"
    build_backbone(get_backbone("mobilenetv2"), 32, None).save_weights(weights)
    [run] = train(engine, TrainConfig(stage="bodypart", split="s", arch="mobilenetv2", weights=str(weights),
                                      image_size=32, epochs=1, head_epochs=2, tensorboard=False,
                                      runs_dir=str(folder / "runs")), verbose=0)
    history = json.loads((Path(run.artifact_dir) / "history.json").read_text())
    assert len(history["head_loss"]) == 2 and len(history["loss"]) == 1


def test_bad_input_is_a_clear_error(small_db, tmp_path, monkeypatch):
    engine, folder = small_db
    base = dict(split="s", runs_dir=str(folder / "runs"), tensorboard=False)
    with pytest.raises(BonedbError, match="unknown architecture 'alexnet'"):
        train(engine, TrainConfig(stage="bodypart", arch="alexnet", **base))
    with pytest.raises(BonedbError, match="no split named 'nope'"):
        train(engine, TrainConfig(stage="bodypart", arch="cnn", weights="none", **{**base, "split": "nope"}))
    with pytest.raises(BonedbError, match="too small for densenet121"):
        train(engine, TrainConfig(stage="bodypart", arch="densenet121", image_size=16, **base))
    with pytest.raises(BonedbError, match="unknown body part 'knee'"):
        from boneclf.vocabulary import parse_parts

        parse_parts("knee")
    # A weights file of another architecture.
    other = tmp_path / "mobilenet.weights.h5"
    build_backbone(get_backbone("mobilenetv2"), 32, None).save_weights(other)
    with pytest.raises(BonedbError, match="does not fit densenet121"):
        train(engine, TrainConfig(stage="bodypart", arch="densenet121", weights=str(other), image_size=32,
                                  **base), verbose=0)
    # ImageNet weights without a network: one line saying how to bring the file.
    from keras.src.utils import file_utils

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure: [Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(file_utils, "urlretrieve", offline)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    with pytest.raises(BonedbError, match="bonedb weights import densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5"):
        train(engine, TrainConfig(stage="bodypart", arch="densenet121", weights="imagenet", image_size=32,
                                  **base), verbose=0)
    assert all(r.status in ("failed", "finished", "interrupted") for r in list_runs(engine))


def test_one_class_split_is_refused(engine, tmp_path):
    synth_mura(tmp_path / "data", patients=12, size=32, positive_rate=0.0, seed=2)
    ingest_mura(engine, tmp_path / "data")
    create_split(engine, "normals", SplitOptions("mura-v1.1", BODY_PARTS, test_from="carve"))
    with pytest.raises(BonedbError, match="only one class"):
        train(engine, TrainConfig(stage="fracture", split="normals", shared=True, **FAST))


def test_undecodable_image_is_skipped_and_reported(tmp_path):
    engine = synth_sqlite(tmp_path, 30, 32)
    from boneclf.data.splits import split_image_paths

    victim = tmp_path / "data" / split_image_paths(engine, "s")["train"][0]
    victim.write_bytes(victim.read_bytes()[:60])
    [run] = train(engine, TrainConfig(stage="bodypart", split="s", image_size=32, epochs=1,
                                      runs_dir=str(tmp_path / "runs"), **FAST), verbose=0)
    assert run.status == "finished"
    assert run.skipped_images == [str(victim)]
    assert run.metrics.skipped_images == 1
    engine.dispose()


def test_canny_pad_and_mixed_precision_options_train(small_db, tmp_path):
    engine, folder = small_db
    [run] = train(engine, TrainConfig(stage="bodypart", split="s", image_size=32, epochs=1, canny=True, pad=True,
                                      mixed_precision=True, runs_dir=str(tmp_path / "runs"), **FAST), verbose=0)
    assert run.status == "finished"
    config = json.loads((Path(run.artifact_dir) / "config.json").read_text())
    assert config["canny"] and config["pad"] and config["mixed_precision"]
    # The policy is restored for whatever trains next in this process.
    assert _keras().mixed_precision.global_policy().name == "float32"


def test_canny_gives_thin_binary_edges(small_db):
    from boneclf.ml.image_spec import ImageSpec

    _engine, folder = small_db
    path = sorted((folder / "data" / "MURA-v1.1").rglob("*.png"))[0]
    edges = ImageSpec(64, canny=True).load(path.read_bytes())[1][..., 0]
    assert set(np.unique(edges)) <= {0, 255}
    assert 0.01 < (edges == 255).mean() < 0.3, "edges outline the shapes, they do not fill them"
