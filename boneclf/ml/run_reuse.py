"""Training that several runs of one command share: `labels suspects` (a run per fold) and `tune` (a run per
trial) both find, for a config on a split, the run already trained with it (reused), the interrupted one to
continue (resumed), or else train a new one. So the same command again continues where Ctrl-C stopped it."""

from __future__ import annotations

from sqlalchemy import Engine

from boneclf.errors import BonedbError
from boneclf.progress import ProgressFactory
from boneclf.store.runs import get_runs, runs_using_split

from .run_folder import settle_dead_runs, still_training
from .train_config import TrainConfig
from .training import resume, train

# Options that change how a run is fed or logged, not what it learns: two runs differing only in these are one.
NOT_IDENTITY = ("split", "runs_dir", "cache_dir", "cache", "tensorboard", "precompute", "parts", "stage", "shared")


def identity(config: TrainConfig) -> dict:
    """What makes two runs the same run: CONFIG's parameters, less how it is fed and logged."""
    return {k: v for k, v in config.to_parameters().items() if k not in NOT_IDENTITY}


def train_or_reuse(engine: Engine, split_id: int, config: TrainConfig, *, progress: ProgressFactory, verbose,
                   callbacks: list | None, busy: str) -> tuple[int, str]:
    """The finished run of CONFIG (one model: bodypart, or fracture with shared) on split SPLIT_ID and how it
    came to be: "reused", "resumed" or "trained". BUSY ends the message when another process is training it.
    A Ctrl-C propagates as KeyboardInterrupt: the caller says how to continue."""
    with engine.connect() as conn:
        ids = runs_using_split(conn, split_id)
    runs = sorted(settle_dead_runs(engine, get_runs(engine, ids)), key=lambda r: r.id)
    wanted = identity(config)
    runs = [r for r in runs if {k: r.parameters.get(k) for k in wanted} == wanted]
    finished = [r for r in runs if r.status == "finished"]
    if finished:
        return finished[-1].id, "reused"
    if runs:
        last = runs[-1]
        if last.status == "running" and still_training(last):
            raise BonedbError(f"run {last.id} is training in another process: wait for it, then {busy}")
        result = resume(engine, last.id, progress=progress, verbose=verbose, callbacks=callbacks)
        return _recorded(result.run_id), "resumed"
    [result] = train(engine, config, progress=progress, verbose=verbose, callbacks=callbacks)
    return _recorded(result.run_id), "trained"


def _recorded(run_id: int | None) -> int:
    assert run_id is not None, "a run on a split is recorded in the database"
    return run_id
