"""Training-ready exports and training from them with no database, then `runs import` and evaluation.

Decoded shards hold exactly what ImageSpec.decode makes; a run trained from them (or from class folders)
learns like a run trained from the database, is recorded once imported, and is scored like any run.
"""

from __future__ import annotations

import csv
import json
import random
import shutil
from dataclasses import replace

import numpy as np
import pytest
from click.testing import CliRunner

from boneclf.cli.main import cli
from boneclf.data.export import export_split
from boneclf.errors import BonedbError
from boneclf.ml.evaluation import evaluate_run
from boneclf.ml.image_spec import ImageSpec
from boneclf.ml.run_import import import_run
from boneclf.ml.tf_env import tensorflow
from boneclf.ml.tfrecords import export_shards, parse_example
from boneclf.ml.training import TrainConfig, train
from boneclf.store.runs import list_runs

from conftest import FAST, synth_sqlite


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    folder = tmp_path_factory.mktemp("small-export")
    engine = synth_sqlite(folder, 40, 32)
    yield engine, folder
    engine.dispose()


def test_decoded_shards_hold_what_the_image_spec_makes(small, tmp_path):
    engine, folder = small
    tf = tensorflow()
    out = tmp_path / "shards"
    report = export_shards(engine, "s", out, stage="bodypart", image_size=24, pad=True, shard_size=16)
    marker = json.loads((out / "split.json").read_text())
    assert marker["image_spec"] == {"size": 24, "pad": True, "canny": False}
    assert marker["class_names"] == sorted(marker["class_names"]) and len(marker["class_names"]) >= 2
    train_shards = marker["shards"]["train"]
    assert len(train_shards) == -(-report.per_subset["train"] // 16) and len(train_shards) > 1
    spec = ImageSpec(24, pad=True)
    records = [parse_example(r, decoded=True) for r in tf.data.TFRecordDataset([str(out / s) for s in train_shards])]
    assert len(records) == report.per_subset["train"]
    for record in records[:5]:
        source = folder / "data" / record["path"].numpy().decode()
        expected = spec.decode(tf.io.read_file(str(source))).numpy()
        stored = np.frombuffer(record["pixels"].numpy(), np.uint8).reshape(24, 24, 1)
        np.testing.assert_array_equal(stored, expected)


def test_an_undecodable_image_names_the_file_and_writes_nothing(tmp_path):
    engine = synth_sqlite(tmp_path, 12, 32)
    victim = sorted((tmp_path / "data").rglob("*.png"))[3]
    victim.write_bytes(b"not a picture")
    with pytest.raises(BonedbError, match=rf"{victim.name}: not a readable image: .*nothing was exported"):
        export_shards(engine, "s", tmp_path / "out", image_size=16)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))
    engine.dispose()


def test_train_from_export_without_a_database_then_import_and_evaluate(small, tmp_path):
    engine, _folder = small
    export_shards(engine, "s", tmp_path / "shards", stage="bodypart", image_size=32, shard_size=16)
    config = TrainConfig(stage="bodypart", split="", from_export=str(tmp_path / "shards"), epochs=1,
                         runs_dir=str(tmp_path / "runs"), **FAST)
    runs_before = len(list_runs(engine))
    [result] = train(None, config, verbose=0)
    assert result.run_id is None and result.status == "finished"
    run_dir = tmp_path / "runs" / result.artifact_dir.split("/")[-1]
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "finished" and record["split_name"] == "s"
    assert record["image_spec"]["size"] == 32 and record["export"]["format"] == "tfrecord"
    assert json.loads((run_dir / "config.json").read_text())["versions"]["tensorflow"] == tensorflow().__version__
    assert len(list_runs(engine)) == runs_before  # no database was touched

    run = import_run(engine, run_dir)
    assert run.status == "finished" and run.split_name == "s" and run.artifact_dir == str(run_dir)
    assert json.loads((run_dir / "config.json").read_text())["run_id"] == run.id
    evaluation = evaluate_run(engine, run.id, "test")
    assert evaluation.overall.n > 0
    with pytest.raises(BonedbError, match=f"already recorded as run {run.id}"):
        import_run(engine, run_dir)


def test_import_refuses_a_split_this_database_does_not_hold(small, tmp_path):
    engine, _folder = small
    export_split(engine, "s", tmp_path / "tree", stage="bodypart")
    marker = json.loads((tmp_path / "tree" / "split.json").read_text())
    [result] = train(None, TrainConfig(stage="bodypart", split="", from_export=str(tmp_path / "tree"), epochs=1,
                                       image_size=32, runs_dir=str(tmp_path / "runs"), **FAST), verbose=0)
    run_dir = result.artifact_dir
    record = json.loads((tmp_path / "runs" / run_dir.split("/")[-1] / "run.json").read_text())
    assert record["export"]["format"] == "files" and record["split_hash"] == marker["content_hash"]
    (tmp_path / "other").mkdir()
    other = synth_sqlite(tmp_path / "other", 14, 32)  # a split "s" of other images: another hash
    with pytest.raises(BonedbError, match="content hash .* another hash .*import it into the database"):
        import_run(other, run_dir)
    assert list_runs(other) == []
    other.dispose()


def test_train_from_export_refuses_another_image_size_and_a_broken_manifest(small, tmp_path):
    engine, _folder = small
    export_shards(engine, "s", tmp_path / "shards", stage="bodypart", image_size=32)
    config = TrainConfig(stage="bodypart", split="", from_export=str(tmp_path / "shards"), image_size=48,
                         runs_dir=str(tmp_path / "runs"), **FAST)
    with pytest.raises(BonedbError, match="decoded at 32 px: leave out --image-size 48"):
        train(None, config, verbose=0)
    manifest = tmp_path / "shards" / "manifest.csv"
    lines = manifest.read_text().splitlines()
    manifest.write_text("\n".join(lines[:3] + ["garbage,row"] + lines[3:]) + "\n")
    with pytest.raises(BonedbError, match=r"manifest.csv: line 4 is not a manifest row"):
        train(None, replace(config, image_size=None), verbose=0)
    assert not (tmp_path / "runs").exists()


def test_cli_export_train_import_evaluate(small, tmp_path):
    engine, folder = small
    url = str(engine.url)
    runner = CliRunner()
    shards = tmp_path / "shards"
    done = runner.invoke(cli, ["--database-url", url, "export", "s", str(shards), "--format", "tfrecord",
                               "--image-size", "32", "--stage", "bodypart", "--shard-size", "20"])
    assert done.exit_code == 0, done.output
    # No database: a URL that cannot be opened proves train never connects.
    done = runner.invoke(cli, ["--database-url", f"sqlite:///{tmp_path / 'absent' / 'no.sqlite'}", "train",
                               "--stage", "bodypart", "--from-export", str(shards), "--arch", "cnn", "--weights",
                               "none", "--epochs", "1", "--augment", "flip", "--no-tensorboard", "--runs-dir",
                               str(tmp_path / "runs"), "--json"])
    assert done.exit_code == 0, done.output
    run_dir = json.loads(done.output.strip().splitlines()[-1])["artifact_dir"]
    done = runner.invoke(cli, ["--database-url", url, "runs", "import", run_dir, "--json"])
    assert done.exit_code == 0, done.output
    run_id = json.loads(done.output)["id"]
    done = runner.invoke(cli, ["--database-url", url, "evaluate", str(run_id), "--json"])
    assert done.exit_code == 0, done.output
    # A stage-2 model from the same shards, imported too: predict uses both imported runs.
    done = runner.invoke(cli, ["train", "--stage", "fracture", "--shared", "--from-export", str(shards), "--arch",
                               "cnn", "--weights", "none", "--epochs", "1", "--augment", "flip", "--no-tensorboard",
                               "--runs-dir", str(tmp_path / "runs"), "--json"])
    assert done.exit_code == 0, done.output
    fracture_dir = json.loads(done.output.strip().splitlines()[-1])["artifact_dir"]
    done = runner.invoke(cli, ["--database-url", url, "runs", "import", fracture_dir, "--json"])
    assert done.exit_code == 0, done.output
    fracture_id = json.loads(done.output)["id"]
    image = next((folder / "data").rglob("*.png"))
    done = runner.invoke(cli, ["--database-url", url, "predict", str(image), "--bodypart-run", str(run_id),
                               "--fracture-run", str(fracture_id), "--json"])
    assert done.exit_code == 0, done.output
    assert str(run_id) in done.output and str(fracture_id) in done.output
    shutil.rmtree(run_dir)


@pytest.mark.parametrize("shuffled", [False, True], ids=["labels", "shuffled-labels"])
def test_a_run_trained_from_decoded_shards_learns_the_body_part(learning_copy, tmp_path, shuffled):
    """The same bar as the database path's stage-1 test, on the same synthetic set, scored after import; the
    same export with its training labels shuffled (manifest.csv, which training reads them from) must fail it."""
    engine, _folder = learning_copy
    export_shards(engine, "s", tmp_path / "shards", stage="bodypart", image_size=32, shard_size=256)
    if shuffled:
        manifest = tmp_path / "shards" / "manifest.csv"
        with manifest.open(newline="") as f:
            rows = list(csv.DictReader(f))
        learned_from = [r for r in rows if r["subset"] in ("train", "val")]
        parts = [r["part"] for r in learned_from]
        random.Random(0).shuffle(parts)
        for row, part in zip(learned_from, parts):
            row["part"] = part
        with manifest.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    config = TrainConfig(stage="bodypart", split="", from_export=str(tmp_path / "shards"), epochs=10, patience=10,
                         runs_dir=str(tmp_path / "runs"), **FAST)
    [result] = train(None, config, verbose=0)
    run = import_run(engine, result.artifact_dir)
    accuracy = evaluate_run(engine, run.id, "test").overall.accuracy
    if shuffled:
        assert accuracy < 0.5, accuracy
    else:
        assert accuracy >= 0.95, accuracy


def test_runs_import_on_both_backends(engine, mura, tmp_path):
    """`runs import` records the run on the stored split with its hash, on SQLite and on MySQL."""
    from boneclf.data.ingest import ingest_mura
    from boneclf.data.splits import SplitOptions, create_split
    from boneclf.vocabulary import BODY_PARTS

    ingest_mura(engine, mura)
    create_split(engine, "s", SplitOptions("mura-v1.1", BODY_PARTS, test_from="carve", val=0.2, test=0.2, seed=1))
    export_shards(engine, "s", tmp_path / "shards", stage="bodypart", image_size=32)
    [result] = train(None, TrainConfig(stage="bodypart", split="", from_export=str(tmp_path / "shards"), epochs=1,
                                       runs_dir=str(tmp_path / "runs"), **FAST), verbose=0)
    run = import_run(engine, result.artifact_dir)
    [listed] = list_runs(engine)
    assert (listed.id, listed.status, listed.split_name, listed.image_spec["size"]) == (run.id, "finished", "s", 32)
    assert listed.metrics == json.loads((tmp_path / "runs" / result.artifact_dir.split("/")[-1] / "run.json")
                                        .read_text())["metrics"]
