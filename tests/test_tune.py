"""`bonedb tune` end to end on tiny synthetic data: every trial an ordinary recorded run on one split, the test
subset evaluated once (after the search, for the run chosen on validation), and a Ctrl-C continued by running
the same command again."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from boneclf.cli.main import cli
from boneclf.data.ingest import ingest_mura
from boneclf.data.splits import SplitOptions, create_split
from boneclf.data.synth import synth_mura
from boneclf.errors import BonedbError, Interrupted
from boneclf.ml.train_config import TrainConfig
from boneclf.ml.tuning import TuneSpace, tune
from boneclf.store import migrate
from boneclf.store.engine import make_engine
from boneclf.store.runs import get_runs
from boneclf.store.schema import Evaluation, TrainingRun
from boneclf.vocabulary import BODY_PARTS

from conftest import ctrl_c_after_epochs

# Three trials, one per augmentation: a space small enough to search whole, two epochs each at 32 px.
SPACE = TuneSpace(archs=("cnn",), image_sizes=(32,), lr=(1e-3, 1e-3), augments=("paper", "flip", "none"),
                  epochs=(2,))


def _count(engine, query) -> int:
    with engine.connect() as conn:
        return conn.execute(query).scalar_one()


def _test_evaluations(engine) -> int:
    return _count(engine, select(func.count()).select_from(Evaluation).where(Evaluation.subset == "test"))


def test_tune_records_every_trial_as_a_run_tests_the_best_once_and_continues_after_ctrl_c(tmp_path):
    synth_mura(tmp_path / "data", patients=40, size=32, seed=7)
    url = f"sqlite:///{tmp_path / 'bonedb.sqlite'}"
    engine = make_engine(url, create=True)
    migrate.upgrade(engine)
    ingest_mura(engine, tmp_path / "data")
    create_split(engine, "s", SplitOptions("mura-v1.1", BODY_PARTS, test_from="carve", seed=1))
    base = TrainConfig(stage="fracture", split="s", weights="none", batch_size=16, patience=2, tensorboard=False,
                       runs_dir=str(tmp_path / "runs"))

    with pytest.raises(Interrupted, match="tune 't' was interrupted; run the same `bonedb tune` again"):
        # Ctrl-C after trial 0's two epochs and trial 1's first.
        tune(engine, "t", base, SPACE, max_trials=3, tuner="random", verbose=0, callbacks=[ctrl_c_after_epochs(3)])
    with engine.connect() as conn:
        before = conn.execute(select(TrainingRun.id, TrainingRun.status).order_by(TrainingRun.id)).all()
    assert [status for _, status in before] == ["finished", "interrupted"]
    assert _test_evaluations(engine) == 0, "nothing is tested before the search ends"

    # The same tune again: trial 0 reused, trial 1 resumed from its checkpoint, trial 2 trained; then one test.
    result = tune(engine, "t", base, SPACE, max_trials=3, tuner="random", verbose=0)
    assert [(t.run_id, t.how) for t in result.trials][:2] == [(before[0].id, "reused"), (before[1].id, "resumed")]
    assert result.trials[2].how == "trained" and result.stopped == "max-trials"
    runs = get_runs(engine, [t.run_id for t in result.trials])
    assert _count(engine, select(func.count()).select_from(TrainingRun)) == 3
    # Each trial is an ordinary run with the trial's options, on the one split, scored on validation.
    assert sorted(r.parameters["augment"] for r in runs) == ["flip", "none", "paper"]
    assert {r.split_name for r in runs} == {"s"} and {r.status for r in runs} == {"finished"}
    for trial, run in zip(result.trials, runs):
        assert run.parameters["augment"] == trial.options["augment"] and run.parameters["image_size"] == 32
    # Chosen on validation alone; only that run was evaluated on test, once.
    best_validation = max(run.validation_score for run in runs)
    assert result.best_run in {r.id for r in runs if r.validation_score == best_validation}
    assert result.test is not None and result.test.run_id == result.best_run and result.test_evaluated_now
    with engine.connect() as conn:
        tested = conn.execute(select(Evaluation.run_id).where(Evaluation.subset == "test")).scalars().all()
    assert tested == [result.best_run]

    # From the command line, once more: nothing trained, the stored test figures shown, test still scored once.
    shown = CliRunner().invoke(cli, ["--database-url", url, "tune", "t", "--split", "s", "--image-size", "32",
                                     "--epochs", "2", "--lr", "1e-3,1e-3", "--augment", "paper,flip,none",
                                     "--weights", "none", "--batch-size", "16", "--patience", "2", "--max-trials", 3,
                                     "--tuner", "random", "--no-tensorboard", "--runs-dir", str(tmp_path / "runs"),
                                     "--json"])
    assert shown.exit_code == 0, shown.output
    again = json.loads(shown.stdout)
    assert again["best_run"] == result.best_run and not again["test_evaluated_now"]
    assert [t["how"] for t in again["trials"]] == ["reused"] * 3
    assert _count(engine, select(func.count()).select_from(TrainingRun)) == 3 and _test_evaluations(engine) == 1

    # The same name with another space is refused, naming what differs; an hour budget already spent starts nothing.
    with pytest.raises(BonedbError, match=r"tune 't' was started with other options \(space differ\)"):
        tune(engine, "t", base, TuneSpace(image_sizes=(32,), epochs=(3,)), max_trials=3, tuner="random",
             verbose=0)
    # What a trial would refuse is refused before the search claims a name (here: no epochs, a part not in the split).
    with pytest.raises(BonedbError, match="--epochs 0"):
        tune(engine, "v", base, TuneSpace(image_sizes=(32,), epochs=(0,)), verbose=0)
    with pytest.raises(BonedbError, match="has no images of"):
        tune(engine, "v", replace(base, parts=("knee",)), SPACE, verbose=0)
    assert not (tmp_path / "runs" / "tune" / "v").exists()
    ledger = tmp_path / "runs" / "tune" / "w" / "bonedb-tune.json"
    ledger.parent.mkdir(parents=True)
    ledger.write_text('{"identity": ')  # cut short, as a full disk leaves a file
    with pytest.raises(BonedbError, match=r"bonedb-tune.json: unreadable .*give the tune a new NAME"):
        tune(engine, "w", base, SPACE, verbose=0)
    spent = tune(engine, "u", base, SPACE, max_trials=3, max_hours=1e-9, verbose=0)
    assert spent.stopped == "max-hours" and spent.best_run is None
    assert [(t.run_id, t.how) for t in spent.trials] == [(None, "not trained")], "proposed, to run first next time"
    assert _count(engine, select(func.count()).select_from(TrainingRun)) == 3 and _test_evaluations(engine) == 1
    engine.dispose()
