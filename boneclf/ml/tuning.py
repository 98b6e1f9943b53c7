"""`bonedb tune`: search training options with KerasTuner, every trial an ordinary recorded run.

KerasTuner's oracle (Bayesian optimisation, or random search) proposes the options; bonedb trains each
proposal as `bonedb train` would, on the same split, and reports its validation score (study kappa for
stage 2, accuracy for stage 1) back as the objective. The test subset is not looked at while searching:
once the search ends, the best trial's run is evaluated on test, once. A second evaluation is never made;
running `tune` again shows the stored one.

A tune is resumable: the oracle's state lives in <runs-dir>/tune/<name>/ (KerasTuner's own files) and each
trial's run is found again by its options (`run_reuse`), so after a Ctrl-C the same command continues,
reusing finished trials and resuming the interrupted one from its last epoch. `--max-trials` and
`--max-hours` bound it; the hours count across resumes.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from sqlalchemy import Engine

from boneclf.errors import BonedbError, Interrupted
from boneclf.files import atomic_write
from boneclf.progress import ProgressFactory, silent
from boneclf.results import Result
from boneclf.store.queries import get_split
from boneclf.store.runs import get_runs
from boneclf.vocabulary import FRACTURE

from .evaluation import EvaluationResult, evaluate_run, latest_result
from .run_reuse import identity, train_or_reuse
from .train_config import TrainConfig
from .training_data import load_stage_data
from .tune_space import MAX_HOURS, MAX_TRIALS, TUNERS, TuneSpace

OBJECTIVE = "validation"  # study kappa (stage 2) or accuracy (stage 1) on the split's val subset
WORST = -1.0  # what a run without a score reports to the oracle (kappa's floor): it must be a finite number


@dataclass
class TrialOutcome(Result):
    trial: str
    run_id: int | None  # None: not trained yet (interrupted before its run was recorded)
    how: str  # trained, resumed or reused (this time)
    options: dict  # arch, image_size, lr, augment, epochs
    validation: float | None  # the objective; None: no score


@dataclass
class TuneResult(Result):
    name: str
    split: str
    stage: str
    objective: str  # what "validation" is: study kappa or accuracy on val
    trials: list[TrialOutcome] = field(default_factory=list)
    best_run: int | None = None
    best_options: dict = field(default_factory=dict)
    test: EvaluationResult | None = None  # the best run on test, evaluated once
    test_evaluated_now: bool = False  # False: the stored evaluation of an earlier `tune`
    notes: list[str] = field(default_factory=list)  # what a person should know about the choice
    stopped: str = ""  # max-trials, max-hours or space exhausted
    hours: float = 0.0  # spent searching, across resumes


class _Ledger:
    """What bonedb keeps beside KerasTuner's files: the tune's identity, each trial's run and the hours spent."""

    def __init__(self, path: Path, identity: dict):
        self.path = path
        try:
            stored = json.loads(path.read_text()) if path.is_file() else None
        except (ValueError, OSError) as exc:
            raise BonedbError(f"{path}: unreadable ({exc}); give the tune a new NAME, or remove "
                              f"{path.parent} to start it over") from None
        if stored is not None and stored["identity"] != identity:
            changed = sorted(k for k in identity if stored["identity"].get(k) != identity[k])
            raise BonedbError(f"tune {path.parent.name!r} was started with other options ({', '.join(changed)} "
                              "differ): run it with its first options to continue it, or give a new NAME")
        self.identity = identity
        self.runs: dict[str, int] = dict(stored["runs"]) if stored else {}
        self.seconds: float = float(stored["seconds"]) if stored else 0.0

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path, json.dumps({"identity": self.identity, "runs": self.runs, "seconds": self.seconds},
                                           indent=1))


def tune(engine: Engine, name: str, base: TrainConfig, space: TuneSpace = TuneSpace(), *,
         max_trials: int = MAX_TRIALS, max_hours: float = MAX_HOURS, tuner: str = "bayesian",
         progress: ProgressFactory = silent, verbose="auto", callbacks: list | None = None) -> TuneResult:
    """Search SPACE around BASE (its split, stage, parts and other options) as tune NAME; then test the best."""
    import keras_tuner

    if tuner not in TUNERS:
        raise BonedbError(f"--tuner {tuner!r}: choose {', '.join(TUNERS)}")
    if max_trials < 1 or max_hours <= 0:
        raise BonedbError("--max-trials and --max-hours must be positive")
    base = replace(base, shared=True) if base.stage == FRACTURE else base
    with engine.connect() as conn:
        split_id = get_split(conn, base.split).id
    # Everything a trial could refuse is checked before the search claims NAME: the split's parts and
    # labels, and every architecture, size and epoch count of the space.
    load_stage_data(engine, base.split, base.stage, base.parts)
    for arch in space.archs:
        for size in space.image_sizes:
            for epochs in space.epochs:
                replace(base, arch=arch, image_size=size, epochs=epochs, lr=space.lr[0]).resolved()
    folder = Path(base.runs_dir) / "tune" / name
    ledger = _Ledger(folder / "bonedb-tune.json", {"split": base.split, "stage": base.stage, "parts": base.parts,
                                                   "space": space.to_dict(), "tuner": tuner,
                                                   "options": identity(base.resolved())})
    started, earlier, outcomes = time.monotonic(), ledger.seconds, {}

    def spent() -> float:
        return earlier + time.monotonic() - started

    class OutOfTime(keras_tuner.errors.FatalError):
        pass

    class Failed(keras_tuner.errors.FatalError):
        """A bonedb error inside a trial: KerasTuner would otherwise record it as an invalid trial and go on."""

    searcher = keras_tuner.BayesianOptimization if tuner == "bayesian" else keras_tuner.RandomSearch

    class RunTuner(searcher):  # type: ignore[valid-type,misc]
        def run_trial(self, trial, *args, **kwargs):
            if spent() >= max_hours * 3600:  # checked before a trial starts: the last one may overrun
                raise OutOfTime(f"{spent() / 3600:.2f} hours spent")
            config = _trial_config(base, trial.hyperparameters.values)
            try:
                run_id, how = train_or_reuse(engine, split_id, config, progress=progress, verbose=verbose,
                                             callbacks=callbacks, busy=f"run `bonedb tune {name}` again")
            except BonedbError as exc:
                raise Failed(str(exc)) from exc
            ledger.runs[trial.trial_id] = run_id
            ledger.seconds = spent()
            ledger.save()
            outcomes[trial.trial_id] = how
            return {OBJECTIVE: _score(engine, run_id)}

    hp = keras_tuner.HyperParameters()
    space.declare(hp)
    with contextlib.redirect_stdout(io.StringIO()):  # "Reloading Tuner from ...": stdout is for results (--json)
        search = RunTuner(objective=keras_tuner.Objective(OBJECTIVE, direction="max"), max_trials=max_trials,
                          hyperparameters=hp, tune_new_entries=False, seed=base.seed, directory=str(folder.parent),
                          project_name=name, overwrite=False)
    stopped = "max-trials"
    try:
        search.search(verbose=0)
    except OutOfTime:
        stopped = "max-hours"
    except Failed as exc:
        raise BonedbError(str(exc)) from exc.__cause__
    except KeyboardInterrupt:
        raise Interrupted(f"tune {name!r} was interrupted; run the same `bonedb tune` again to continue it "
                          "(finished trials are reused, the interrupted one resumes from its last epoch)") from None
    finally:
        ledger.seconds = spent()
        ledger.save()
    trials = _outcomes(engine, search, ledger, outcomes)
    if stopped == "max-trials" and len(trials) < max_trials:
        stopped = "space exhausted"
    return _finish(engine, TuneResult(name, base.split, base.stage, _objective_name(base.stage), trials,
                                      stopped=stopped, hours=ledger.seconds / 3600))


def _trial_config(base: TrainConfig, values: dict) -> TrainConfig:
    return replace(base, arch=values["arch"], image_size=int(values["image_size"]), lr=float(values["lr"]),
                   augment=values["augment"], epochs=int(values["epochs"]))


def _score(engine: Engine, run_id: int) -> float:
    [run] = get_runs(engine, [run_id])
    value = run.validation_score
    return value if math.isfinite(value) else WORST


def _objective_name(stage: str) -> str:
    return "study kappa on val" if stage == FRACTURE else "accuracy on val"


def _outcomes(engine: Engine, search, ledger: _Ledger, how: dict[str, str]) -> list[TrialOutcome]:
    rows = []
    for trial_id in sorted(search.oracle.trials):
        values = search.oracle.trials[trial_id].hyperparameters.values
        run_id = ledger.runs.get(trial_id)
        score = _score(engine, run_id) if run_id is not None else None
        rows.append(TrialOutcome(trial_id, run_id, how.get(trial_id, "reused" if run_id else "not trained"),
                                 {k: values[k] for k in ("arch", "image_size", "lr", "augment", "epochs")},
                                 None if score is None or score == WORST else score))
    return rows


def _finish(engine: Engine, result: TuneResult) -> TuneResult:
    """Choose the best trial on validation only and evaluate it on test, once for the whole tune: when a search
    extended later (a higher --max-trials) finds a new best, the test subset is not looked at again."""
    scored = [(t, t.run_id, t.validation) for t in result.trials if t.run_id is not None and t.validation is not None]
    if not scored:
        return result
    best, best_run, best_validation = max(scored, key=lambda s: (s[2], -int(s[0].trial)))  # ties: the earlier one
    result.best_run, result.best_options = best_run, best.options
    runs = {run.id: run for run in get_runs(engine, [run_id for _, run_id, _ in scored])}
    tested = [(t, found) for t, run_id, _ in scored if (found := latest_result(engine, runs[run_id], "test"))]
    if not tested:
        result.test, result.test_evaluated_now = evaluate_run(engine, best_run, "test"), True
    else:
        earlier, result.test = tested[0]
        if earlier is not best:
            result.notes.append(f"the best trial is now {best.trial} (run {best_run}), found after the test "
                                f"subset scored trial {earlier.trial} (run {earlier.run_id}); it is not scored on "
                                "test again: a second look would let the test subset choose")
    if best_validation <= 0 and result.stage == FRACTURE:
        result.notes.append(f"the best trial's study kappa on val is {best_validation:.2f}: no trial learned to "
                            "tell normal from abnormal; train longer (--epochs) or widen the space")
    return result
