"""`bonedb demo`: the whole pipeline on synthetic data, offline, small enough for a laptop CPU.

Synth, migrate, ingest (with --verify), split, audit, export, train stage 1 and stage 2, evaluate,
predict a few test studies with Grad-CAM, write the report. Everything lives in one work folder,
the embedded SQLite database included, so `cd WORKDIR && bonedb predict IMAGE` uses the demo's
runs. A second run in the same folder reuses every step it can.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from sqlalchemy import Engine

from . import migrate
from .audit import audit_split
from .bodyparts import BODY_PARTS
from .database import make_engine
from .evaluation import evaluate_run
from .export import export_split
from .ingest import ingest_mura
from .predict import Predictor
from .progress import ProgressFactory, silent
from .report import build_report
from .runs import latest_evaluation, list_runs
from .splits import SplitOptions, create_split, split_image_paths
from .synth import synth_mura
from .training import TrainConfig, train

SPLIT = "demo"


@dataclass(frozen=True)
class DemoSettings:
    patients: int = 300
    size: int = 64
    stage1_epochs: int = 10
    stage2_epochs: int = 30
    studies_to_predict: int = 3


QUICK = DemoSettings(patients=40, size=48, stage1_epochs=2, stage2_epochs=2, studies_to_predict=2)


def run_demo(workdir: Path, *, database_url: str | None = None, quick: bool = False,
             say: Callable[[str], None] = lambda message: None, progress: ProgressFactory = silent) -> dict:
    settings = QUICK if quick else DemoSettings()
    workdir = Path(workdir).absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(database_url or f"sqlite:///{workdir / 'bonedb.sqlite'}")
    steps = 11
    summary: dict = {"workdir": str(workdir), "settings": asdict(settings)}

    def step(number: int, text: str) -> None:
        say(f"[{number}/{steps}] {text}")

    step(1, "database schema")
    migrate.upgrade(engine)
    data = workdir / "data"
    step(2, f"synthetic MURA in {data}")
    if (data / "MURA-v1.1" / "valid_labeled_studies.csv").exists():
        say("      already there, reused")
    else:
        synth_mura(data, patients=settings.patients, size=settings.size, seed=0, progress=progress)
    step(3, "ingest with --verify")
    report = ingest_mura(engine, data, verify=True, progress=progress)
    summary["images"] = report.totals[0]["images"] if report.totals else 0
    step(4, f"patient-level split {SPLIT!r}")
    create_split(engine, SPLIT, SplitOptions("mura-v1.1", BODY_PARTS, test_from="carve", val=0.15, test=0.15, seed=1))
    step(5, "leakage audit")
    audit = audit_split(engine, SPLIT, progress=progress)
    summary["leaks"] = audit.leaks
    step(6, "export the stage-2 tree")
    export_split(engine, SPLIT, workdir / "exports" / "fracture", stage="fracture", combined=True, force=True)
    base = TrainConfig(stage="bodypart", split=SPLIT, arch="cnn", weights="none", image_size=settings.size,
                       augment="flip", tensorboard=False, runs_dir=str(workdir / "runs"), lr=1e-3)
    step(7, "train stage 1 (body part)")
    stage1 = _train_or_reuse(engine, replace(base, epochs=settings.stage1_epochs, patience=10), progress)
    step(8, "train stage 2 (normal or abnormal, one model over all parts)")
    stage2 = _train_or_reuse(engine, replace(base, stage="fracture", shared=True, epochs=settings.stage2_epochs,
                                             patience=30, batch_size=16), progress)
    step(9, "evaluate both on the test subset")
    evaluations = {run: latest_evaluation(engine, run, "test") or evaluate_run(engine, run, "test")
                   for run in (stage1, stage2)}
    step(10, "predict test studies with Grad-CAM")
    tests = split_image_paths(engine, SPLIT)["test"]
    studies = sorted({str(data / Path(p).parent) for p in tests})[: settings.studies_to_predict]
    prediction = Predictor(engine, stage1, stage2).predict([Path(s) for s in studies], workdir / "gradcam")
    step(11, "report")
    report_path = build_report(engine, [stage1, stage2], workdir / "report.html")

    stage1_eval, stage2_eval = evaluations[stage1]["overall"], evaluations[stage2]["overall"]
    summary.update({
        "database": engine.url.render_as_string(hide_password=True),
        "bodypart_run": stage1, "fracture_run": stage2,
        "stage1_test_accuracy": stage1_eval["accuracy"],
        "stage2_test_image_accuracy": stage2_eval["image"]["accuracy"],
        "stage2_test_study_kappa": stage2_eval["study"]["kappa"],
        "stage2_test_study_kappa_ci": stage2_eval["study"]["kappa_ci"],
        "predicted_studies": [asdict(s) for s in prediction.studies],
        "gradcam_dir": str(workdir / "gradcam"),
        "report": str(report_path),
        "try_next": f"cd {workdir} && bonedb predict {studies[0]}" if studies else None,
    })
    engine.dispose()
    return summary


def _train_or_reuse(engine: Engine, config: TrainConfig, progress) -> int:
    """A finished run with exactly these parameters is reused; otherwise train one."""
    wanted = json.dumps({**asdict(config), "parts": None}, sort_keys=True)
    for run in reversed(list_runs(engine, stage=config.stage, status="finished")):
        parameters = dict(run["parameters"], parts=None)
        if run["split_name"] == config.split and json.dumps(parameters, sort_keys=True) == wanted:
            return run["id"]
    [result] = train(engine, config, progress=progress, verbose=0)
    return result.run_id
