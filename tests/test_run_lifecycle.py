"""A run's life outside the happy path: a resume that meets a live run, a process killed with -9, a folder
that cannot be made, a checkpoint torn in half; and what the first epoch's progress bar knows.

Real `bonedb train` processes, real OS locks and signals, small models (the CNN at 32 px)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from boneclf.cli.main import cli
from boneclf.errors import BonedbError
from boneclf.ml.tf_env import keras as _keras
from boneclf.ml.training import TrainConfig, resume, train
from boneclf.store.runs import get_run, list_runs

from conftest import FAST, ctrl_c_as_a_terminal, prepare_synth_split


def _url(engine) -> str:
    return engine.url.render_as_string(hide_password=False)


def _bonedb(engine, *args: str) -> subprocess.CompletedProcess:
    bonedb = shutil.which("bonedb", path=str(Path(sys.executable).parent))
    env = {k: v for k, v in os.environ.items() if k != "BONEDB_DATABASE_URL"}
    return subprocess.run([bonedb, "--database-url", _url(engine), *args], env=env, capture_output=True, text=True,
                          timeout=900)


def _stop_after(epochs: int):
    """A callback that interrupts training after EPOCHS epochs, as Ctrl-C would."""
    keras = _keras()

    class Stop(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch + 1 == epochs:
                raise KeyboardInterrupt

    return Stop()


def test_a_live_run_cannot_be_resumed_and_a_killed_one_can(engine, tmp_path):
    prepare_synth_split(engine, tmp_path / "data", 12, 32)
    runs = tmp_path / "runs"
    bonedb = shutil.which("bonedb", path=str(Path(sys.executable).parent))
    env = {k: v for k, v in os.environ.items() if k != "BONEDB_DATABASE_URL"}
    proc = subprocess.Popen([bonedb, "--database-url", _url(engine), "train", "--stage", "bodypart", "--split", "s",
                             "--arch", "cnn", "--weights", "none", "--image-size", "32", "--epochs", "500",
                             "--patience", "500", "--no-tensorboard", "--runs-dir", str(runs)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=ctrl_c_as_a_terminal)
    try:
        deadline = time.monotonic() + 600
        while not list(runs.glob("*/end_to_end_log.csv")):  # Keras is fitting
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "training never started"
            time.sleep(0.5)
        run_id = int(next(runs.glob("*/end_to_end_log.csv")).parent.name)

        refused = _bonedb(engine, "train", "--resume", str(run_id))
        assert refused.returncode == 1
        assert f"error: run {run_id} is still training" in refused.stderr and ".training.lock" in refused.stderr
        refused = _bonedb(engine, "runs", "delete", str(run_id), "--yes", "--force")
        assert refused.returncode == 1 and "is still training" in refused.stderr, "--force never deletes a live run"
        assert get_run(engine, run_id).status == "running"
    finally:
        proc.send_signal(signal.SIGKILL)  # as the OOM killer or a lost machine would
        proc.wait(timeout=60)

    assert get_run(engine, run_id).status == "running", "kill -9 leaves the status as it was"
    listed = _bonedb(engine, "runs", "list", "--json")
    [row] = [r for r in json.loads(listed.stdout) if r["id"] == run_id]
    assert row["status"] == "interrupted" and "training process is gone" in row["error"]

    resumed = _bonedb(engine, "train", "--resume", str(run_id), "--epochs", "1", "--json")
    assert resumed.returncode == 0, resumed.stderr
    assert get_run(engine, run_id).status == "finished"


def test_delete_proceeds_on_a_run_whose_process_is_gone(engine, tmp_path):
    prepare_synth_split(engine, tmp_path / "data", 12, 32)
    config = TrainConfig(stage="bodypart", split="s", image_size=32, epochs=3, runs_dir=str(tmp_path / "runs"), **FAST)
    with pytest.raises(KeyboardInterrupt):
        train(engine, config, verbose=0, callbacks=[_stop_after(1)])
    [run] = list_runs(engine)
    from boneclf.store.runs import set_status

    set_status(engine, run.id, "running")  # as a process killed mid-epoch leaves it: its lock is free
    deleted = CliRunner().invoke(cli, ["--database-url", _url(engine), "runs", "delete", str(run.id), "--yes"])
    assert deleted.exit_code == 0, deleted.output
    assert list_runs(engine) == []


def test_a_train_that_cannot_make_its_folder_ends_failed_and_names_it(engine, tmp_path):
    prepare_synth_split(engine, tmp_path / "data", 12, 32)
    blocked = tmp_path / "a-file"
    blocked.write_text("the runs folder cannot be made under a file, not even by root")
    result = CliRunner().invoke(cli, ["--database-url", _url(engine), "train", "--stage", "bodypart", "--split", "s",
                                      "--arch", "cnn", "--weights", "none", "--image-size", "32", "--epochs", "1",
                                      "--no-tensorboard", "--runs-dir", str(blocked / "runs")])
    assert result.exit_code == 1
    [line] = result.stderr.strip().splitlines()
    [run] = list_runs(engine)
    assert line.startswith(f"error: cannot make the run's folder {blocked / 'runs' / str(run.id)} (")
    assert "--runs-dir" in line and f"run {run.id} is marked failed" in line
    assert run.status == "failed" and "cannot make the run's folder" in run.error
    # Nothing is left blocked: the run can be deleted without --force, then its split.
    url = _url(engine)
    assert CliRunner().invoke(cli, ["--database-url", url, "runs", "delete", str(run.id), "--yes"]).exit_code == 0
    assert CliRunner().invoke(cli, ["--database-url", url, "split", "delete", "s", "--yes"]).exit_code == 0


def test_a_torn_checkpoint_resumes_from_the_one_before_it(engine, tmp_path):
    prepare_synth_split(engine, tmp_path / "data", 12, 32)
    config = TrainConfig(stage="bodypart", split="s", image_size=32, epochs=4, patience=10,
                         runs_dir=str(tmp_path / "runs"), **FAST)
    with pytest.raises(KeyboardInterrupt):
        train(engine, config, verbose=0, callbacks=[_stop_after(2)])
    [run] = list_runs(engine)
    folder = Path(run.artifact_dir)
    state = json.loads((folder / "state.json").read_text())
    assert state["epoch"] == 2 and state["previous"]["epoch"] == 1
    newest, previous = folder / state["checkpoint"], folder / state["previous"]["checkpoint"]
    assert newest.is_file() and previous.is_file() and newest != previous
    assert not list(folder.glob(".*.tmp")) and not list(folder.glob(".checkpoint*")), "no temporary file is left"
    data = newest.read_bytes()
    newest.write_bytes(data[: len(data) // 2])  # as a kill during an in-place write would leave it

    result = resume(engine, run.id, verbose=0)
    assert result.status == "finished"
    [note] = result.notes
    assert str(newest) in note and "could not be read" in note and "after epoch 1" in note
    history = json.loads((folder / "history.json").read_text())
    assert len(history["loss"]) == 4, "one epoch before the torn checkpoint, three after it"


def test_no_readable_checkpoint_is_a_clear_error(engine, tmp_path):
    prepare_synth_split(engine, tmp_path / "data", 12, 32)
    config = TrainConfig(stage="bodypart", split="s", image_size=32, epochs=4, runs_dir=str(tmp_path / "runs"), **FAST)
    with pytest.raises(KeyboardInterrupt):
        train(engine, config, verbose=0, callbacks=[_stop_after(2)])
    [run] = list_runs(engine)
    for checkpoint in Path(run.artifact_dir).glob("checkpoint-*.keras"):
        checkpoint.write_bytes(b"torn")
    with pytest.raises(BonedbError, match="no checkpoint of this run can be read"):
        resume(engine, run.id, verbose=0)
    assert get_run(engine, run.id).status == "failed"


def test_the_first_epoch_knows_its_steps(tmp_path, capfd):
    from conftest import synth_sqlite

    engine = synth_sqlite(tmp_path, 12, 32)
    config = TrainConfig(stage="bodypart", split="s", image_size=32, epochs=1, batch_size=4,
                         runs_dir=str(tmp_path / "runs"), **FAST)
    [result] = train(engine, config, verbose=1)
    out = capfd.readouterr().out
    assert result.status == "finished"
    assert "Unknown" not in out, out[-2000:]
    engine.dispose()
