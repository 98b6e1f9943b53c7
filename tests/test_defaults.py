"""Training as users run it (issue 9): the CLI's defaults left on (TensorBoard logs, --augment paper,
--cache persistent), --resume with the options that may change, Ctrl-C naming the run, every part checked
before per-part training starts, `evaluate` on an unfinished run, `runs show`/`runs list`, `runs delete`.

The other training tests switch these defaults off for speed (conftest.FAST); here they stay on.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from sqlalchemy import update

from boneclf.cli.main import cli
from boneclf.data.ingest import ingest_mura
from boneclf.data.splits import SplitOptions, create_split
from boneclf.data.synth import synth_mura
from boneclf.errors import BonedbError, Interrupted
from boneclf.ml.evaluation import evaluate_run
from boneclf.ml.tf_env import keras as _keras
from boneclf.ml.training import TrainConfig, train
from boneclf.store.runs import create_run, get_run, latest_evaluation, list_runs, set_status
from boneclf.store.schema import Study

from conftest import FAST, ctrl_c_as_a_terminal, synth_sqlite


def run(args, url, **kwargs):
    return CliRunner().invoke(cli, ["--database-url", url, *args], catch_exceptions=False, **kwargs)


def url_of(engine) -> str:
    return engine.url.render_as_string(hide_password=False)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    folder = tmp_path_factory.mktemp("defaults")
    engine = synth_sqlite(folder, 40, 32)
    yield engine, folder
    engine.dispose()


@pytest.fixture(scope="module")
def default_run(small):
    """`bonedb train` with nothing but what makes it small: TensorBoard, augmentation and cache at their defaults."""
    engine, folder = small
    result = run(["train", "--stage", "bodypart", "--split", "s", "--arch", "cnn", "--weights", "none",
                  "--image-size", "32", "--epochs", "2", "--runs-dir", str(folder / "runs"), "--json"], url_of(engine))
    assert result.exit_code == 0, result.output
    [line] = result.output.strip().splitlines()
    return get_run(engine, json.loads(line)["run_id"])


def _events(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Scalars TensorBoard would show, read back from the event files: tag -> [(step, value)]."""
    from boneclf.ml.tf_env import tensorflow

    tf = tensorflow()
    scalars: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(folder.glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                if value.HasField("tensor") and value.metadata.plugin_data.plugin_name == "scalars":
                    scalars.setdefault(value.tag, []).append((event.step, float(tf.make_ndarray(value.tensor))))
    return scalars


def test_tensorboard_logs_are_written_by_default_and_readable(default_run):
    assert default_run.parameters["tensorboard"] is True
    logs = Path(default_run.artifact_dir) / "tensorboard" / "end_to_end"
    train_scalars, validation_scalars = _events(logs / "train"), _events(logs / "validation")
    assert [step for step, _ in train_scalars["epoch_loss"]] == [0, 1]
    assert [step for step, _ in validation_scalars["epoch_loss"]] == [0, 1]
    history = json.loads((Path(default_run.artifact_dir) / "history.json").read_text())
    np.testing.assert_allclose([v for _, v in train_scalars["epoch_loss"]], history["loss"], rtol=1e-5)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(logs / "validation"))
    accumulator.Reload()
    assert "epoch_accuracy" in accumulator.Tags()["tensors"], "TensorBoard itself reads the logs"


def test_default_augmentation_is_the_papers_and_only_in_training(default_run):
    assert default_run.parameters["augment"] == "paper"
    from boneclf.ml import layers  # noqa: F401  (bonedb's custom layers, for loading)

    model = _keras().models.load_model(Path(default_run.artifact_dir) / "model.keras")
    assert {"aug_flip", "aug_rotate", "aug_shift", "aug_zoom"} <= {layer.name for layer in model.layers}
    image = np.zeros((1, 32, 32, 3), np.float32)
    image[0, 4:28, 12:20] = 255.0  # an asymmetric bar: every transform changes it
    augment = _keras().Sequential([model.get_layer(n) for n in ("aug_flip", "aug_rotate", "aug_shift", "aug_zoom")])
    seen = [np.asarray(augment(image, training=True)) for _ in range(4)]
    assert any(not np.allclose(seen[0], other) for other in seen[1:]), "random transforms while training"
    np.testing.assert_array_equal(np.asarray(augment(image, training=False)), image)  # none at inference


def test_default_cache_decodes_each_image_once(small, tmp_path):
    """After the first epoch the images are gone from disk; the cached decodes carry training to the end."""
    engine, folder = small
    data, away = folder / "data", folder / "data-away"

    class TakeTheFilesAway(_keras().callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0:
                data.rename(away)

    config = TrainConfig(stage="bodypart", split="s", image_size=32, epochs=3, patience=10,
                         runs_dir=str(tmp_path / "runs"), **FAST)
    assert config.cache == "persistent", "the library's default, as the CLI's"
    try:
        [result] = train(engine, config, verbose=0, callbacks=[TakeTheFilesAway()])
    finally:
        if away.exists():
            away.rename(data)
    assert result.status == "finished" and result.skipped_images == []
    history = json.loads((Path(result.artifact_dir) / "history.json").read_text())
    assert len(history["loss"]) == 3 and len(history["val_loss"]) == 3
    assert not (Path(result.artifact_dir) / "cache").exists(), "the shared decoded cache, not the run's own"


def test_resume_honours_safe_options_and_refuses_the_others(small, tmp_path):
    engine, folder = small
    url = url_of(engine)

    class StopAfterOne(_keras().callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            raise KeyboardInterrupt

    config = TrainConfig(stage="bodypart", split="s", image_size=32, epochs=3, patience=10,
                         runs_dir=str(tmp_path / "runs"), **{**FAST, "tensorboard": True})
    with pytest.raises(Interrupted) as stopped:
        train(engine, config, verbose=0, callbacks=[StopAfterOne()])
    run_id = list_runs(engine, latest=True)[0].id
    assert stopped.value.message == (f"run {run_id} is marked interrupted; continue it with "
                                     f"`bonedb train --resume {run_id}`")

    refused = run(["train", "--resume", str(run_id), "--lr", "0.1", "--arch", "vgg16"], url)
    assert refused.exit_code == 1
    assert refused.stderr.strip() == (
        f"error: --resume {run_id} continues the run as recorded: --arch, --lr cannot change (only "
        "--no-tensorboard, --batch-size, --cache, --epochs, --patience can); start a new run with `bonedb train` "
        "instead")
    assert get_run(engine, run_id).status == "interrupted"

    resumed = run(["train", "--resume", str(run_id), "--no-tensorboard", "--batch-size", "8", "--json"], url)
    assert resumed.exit_code == 0, resumed.output
    record = get_run(engine, run_id)
    assert record.status == "finished"
    assert record.parameters["tensorboard"] is False and record.parameters["batch_size"] == 8
    assert record.parameters["lr"] == config.lr, "what was refused stayed as recorded"
    logs = Path(record.artifact_dir) / "tensorboard" / "end_to_end" / "train"
    assert [step for step, _ in _events(logs)["epoch_loss"]] == [0], "no TensorBoard logs after the resume"
    assert len(json.loads((Path(record.artifact_dir) / "history.json").read_text())["loss"]) == 3


def test_evaluate_on_an_unfinished_run_says_why_and_what_would_work(small, tmp_path):
    engine, folder = small
    url = url_of(engine)

    def advice(run_id: int) -> str:
        result = run(["evaluate", str(run_id)], url)
        assert result.exit_code == 1
        [line] = result.stderr.strip().splitlines()
        assert line.startswith(f"error: run {run_id} is failed, not finished: ")
        return line

    # A run that failed on a recorded option: a plain resume would fail the same way, so it is not advised as such.
    broken = tmp_path / "broken.h5"
    broken.write_bytes(b"not weights")
    with pytest.raises(BonedbError, match="does not fit mobilenetv2"):
        train(engine, TrainConfig(stage="bodypart", split="s", arch="mobilenetv2", weights=str(broken),
                                  image_size=32, epochs=1, tensorboard=False, runs_dir=str(tmp_path / "runs")),
              verbose=0)
    failed = list_runs(engine, latest=True)[0]
    said = advice(failed.id)
    assert "does not fit mobilenetv2" in said and "continues it only once that cause is gone" in said
    assert f"`bonedb runs delete {failed.id}`" in said

    # A run that failed on TensorBoard is advised the resume that avoids it, not the one that fails again.
    set_status(engine, failed.id, "failed", error="ModuleNotFoundError: No module named 'tensorboard'")
    assert f"`bonedb train --resume {failed.id} --no-tensorboard`" in advice(failed.id)

    # A run whose folder holds another run's files cannot be resumed there at all.
    occupied = tmp_path / "occupied"
    (occupied / str(failed.id + 1)).mkdir(parents=True)
    (occupied / str(failed.id + 1) / "notes.txt").write_text("another database's run")
    with pytest.raises(BonedbError, match="already holds another run's files"):
        train(engine, TrainConfig(stage="bodypart", split="s", image_size=32, epochs=1, runs_dir=str(occupied),
                                  **FAST), verbose=0)
    said = advice(failed.id + 1)
    assert f"`bonedb runs delete {failed.id + 1}`" in said and "--resume" not in said
    refused = run(["train", "--resume", str(failed.id + 1)], url)
    assert refused.exit_code == 1 and "cannot continue in" in refused.stderr
    assert (occupied / str(failed.id + 1) / "notes.txt").read_text() == "another database's run"


def test_ctrl_c_names_the_run_to_resume(small, tmp_path):
    """A real SIGINT to a real `bonedb train` process."""
    engine, folder = small
    bonedb = shutil.which("bonedb", path=str(Path(sys.executable).parent))
    runs = tmp_path / "runs"
    env = {k: v for k, v in os.environ.items() if k != "BONEDB_DATABASE_URL"}
    proc = subprocess.Popen([bonedb, "--database-url", url_of(engine), "train", "--stage", "bodypart", "--split", "s",
                             "--arch", "cnn", "--weights", "none", "--image-size", "32", "--epochs", "200",
                             "--patience", "200", "--no-tensorboard", "--runs-dir", str(runs)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=ctrl_c_as_a_terminal)
    deadline = time.monotonic() + 600
    while not list(runs.glob("*/end_to_end_log.csv")):  # Keras is fitting: the run exists and is recorded
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "training never started"
        time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _out, errors = proc.communicate(timeout=300)
    run_id = int(next(runs.glob("*/end_to_end_log.csv")).parent.name)
    assert proc.returncode == 130, errors
    assert errors.strip().splitlines()[-1] == (f"interrupted: run {run_id} is marked interrupted; continue it with "
                                               f"`bonedb train --resume {run_id}`")
    assert "--resume RUN" not in errors and "Traceback" not in errors
    assert get_run(engine, run_id).status == "interrupted"


def test_per_part_training_checks_every_part_first(engine, tmp_path):
    synth_mura(tmp_path / "data", patients=40, parts=("humerus", "shoulder"), size=32, seed=5)
    ingest_mura(engine, tmp_path / "data")
    with engine.begin() as conn:  # a part whose studies are all normal: nothing to learn there
        conn.execute(update(Study).where(Study.body_part == "shoulder").values(label=0))
    create_split(engine, "s", SplitOptions("mura-v1.1", ("humerus", "shoulder"), test_from="carve", val=0.2, test=0.2))
    config = TrainConfig(stage="fracture", split="s", image_size=32, epochs=1, runs_dir=str(tmp_path / "runs"),
                         **FAST)
    with pytest.raises(BonedbError) as refused:
        train(engine, config, verbose=0)
    message = str(refused.value)
    assert "only one class to learn (normal) for shoulder" in message
    assert "nothing was trained: leave shoulder out (--parts humerus) or train one model over all parts with " \
           "--shared" in message
    assert list_runs(engine) == [], "humerus, first in order, was not trained and recorded"
    assert not (tmp_path / "runs").exists()


def test_runs_list_and_show_speak_plainly(small, default_run):
    engine, _folder = small
    url = url_of(engine)
    table = run(["runs", "list"], url).output.splitlines()
    assert table[0].split() == ["id", "stage", "parts", "arch", "split", "data", "status", "started",
                                "val_image_accuracy", "val_study_kappa"]
    assert table[2].split()[5] == "synthetic", "a run on drawn pictures says so in the listing"
    shown = run(["runs", "show", str(default_run.id)], url).output
    for raw in ("None", "True", "False", "[", "{"):
        assert raw not in shown, f"runs show prints a raw Python value: {raw}"
    assert "  augment         paper" in shown and "  tensorboard     yes" in shown and "  image_size      32" in shown
    # Drawn data never passes for real: show and compare say so, as list does, in every format.
    note = "note: dataset mura-v1.1 is synthetic (drawn by `bonedb synth`)"
    assert "data          synthetic, dataset mura-v1.1" in shown and note in shown, shown
    shown = json.loads(run(["runs", "show", str(default_run.id), "--json"], url).output)
    assert (shown["data"], shown["dataset"]) == ("synthetic", "mura-v1.1")
    compared = run(["runs", "compare", str(default_run.id)], url).output.splitlines()
    assert compared[0].split()[7] == "data" and compared[2].split()[7] == "synthetic", compared
    assert compared[-1].startswith(f"note: run {default_run.id} trained on synthetic pictures (drawn by"), compared
    [row] = json.loads(run(["runs", "compare", str(default_run.id), "--json"], url).output)
    assert row["data"] == "synthetic"
    as_csv = run(["runs", "compare", str(default_run.id), "--csv"], url)
    assert [r["data"] for r in csv.DictReader(io.StringIO(as_csv.stdout))] == ["synthetic"]
    assert as_csv.stderr.startswith(f"note: run {default_run.id} trained on synthetic pictures"), "CSV stays parseable"


def test_runs_delete_with_their_files_and_then_the_split(tmp_path):
    engine = synth_sqlite(tmp_path, 12, 32)
    url = url_of(engine)
    runs = tmp_path / "runs"
    [finished] = train(engine, TrainConfig(stage="fracture", split="s", shared=True, image_size=32, epochs=1,
                                           runs_dir=str(runs), **FAST), verbose=0)
    evaluate_run(engine, finished.run_id, "test")
    (runs / "2").mkdir()
    (runs / "2" / "notes.txt").write_text("not bonedb's")
    with pytest.raises(BonedbError):
        train(engine, TrainConfig(stage="bodypart", split="s", image_size=32, epochs=1, runs_dir=str(runs), **FAST))
    assert [r.status for r in list_runs(engine)] == ["finished", "failed"]

    refused = run(["split", "delete", "s", "--yes"], url)
    assert refused.exit_code == 1 and "`bonedb runs delete 1 2` deletes them" in refused.stderr
    refused = run(["runs", "delete", "1", "2"], url)
    assert refused.exit_code == 1 and "pass --yes to confirm" in refused.stderr and "1 evaluation(s)" in refused.stderr
    assert len(list_runs(engine)) == 2 and (runs / "1" / "model.keras").exists()

    deleted = run(["runs", "delete", "1", "2", "--yes", "--json"], url)
    assert deleted.exit_code == 0, deleted.output
    report = json.loads(deleted.output)
    assert report["runs"] == [1, 2] and report["evaluations"] == 1
    assert report["folders_removed"] == [str(runs / "1")]
    assert report["folders_left"] == [f"{runs / '2'}: no bonedb config.json in it"]
    assert list_runs(engine) == [] and latest_evaluation(engine, 1) is None
    nothing = run(["runs", "list", "--status", "finished", "--latest", "--ids"], url)
    assert nothing.exit_code == 1 and nothing.stderr.startswith("error: no run with status finished")
    assert not (runs / "1").exists() and (runs / "2" / "notes.txt").read_text() == "not bonedb's"

    # A run still marked running is refused unless --force says its process is gone.
    from boneclf.store.queries import get_split

    with engine.connect() as conn:
        split = get_split(conn, "s")
    stale = create_run(engine, stage="bodypart", parts=("hand",), architecture="cnn", parameters={}, image_spec={},
                       split=split, label_version=None, tf_version="-", runs_dir=str(runs))
    refused = run(["runs", "delete", str(stale), "--yes"], url)
    assert refused.exit_code == 1 and f"run {stale} is running" in refused.stderr and "--force" in refused.stderr
    assert run(["runs", "delete", str(stale), "--yes", "--force"], url).exit_code == 0
    assert run(["split", "delete", "s", "--yes"], url).exit_code == 0
    engine.dispose()
