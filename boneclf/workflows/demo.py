"""`bonedb demo`: the whole pipeline on synthetic data, offline, small enough for a laptop CPU.

Synth, migrate, ingest (with --verify), split, audit, export, train stage 1 and stage 2, evaluate,
predict a few test studies with Grad-CAM, write the report. Everything lives in one work folder,
the embedded SQLite database included, so `cd WORKDIR && bonedb predict IMAGE` uses the demo's
runs. A second run in the same folder reuses every step it can.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from sqlalchemy import Engine

from boneclf.data.audit import audit_split
from boneclf.data.export import export_split
from boneclf.data.ingest import ingest_mura
from boneclf.data.splits import SplitOptions, create_split, split_image_paths
from boneclf.data.synth import is_synthetic, mark_synthetic, synth_mura
from boneclf.errors import BonedbError
from boneclf.ml.evaluation import evaluate_run, latest_result
from boneclf.ml.predict import Predictor
from boneclf.ml.training import TrainConfig, train
from boneclf.progress import ProgressFactory, silent
from boneclf.results import Result
from boneclf.scores import BinaryMetrics, MulticlassMetrics
from boneclf.store import migrate
from boneclf.store.engine import describe, make_engine, mask_url
from boneclf.store.runs import get_run, list_runs
from boneclf.vocabulary import BODY_PARTS, BODYPART, FRACTURE

from .report import build_report

SPLIT = "demo"


@dataclass(frozen=True)
class DemoSettings:
    patients: int = 300
    size: int = 64
    stage1_epochs: int = 10
    stage2_epochs: int = 30
    studies_to_predict: int = 3


@dataclass
class DemoSummary(Result):
    workdir: str
    settings: DemoSettings
    database: str
    images: int = 0
    synthetic: bool = True  # always: the demo draws its pictures; said in every output so no one quotes its figures
    leaks: bool = False
    bodypart_run: int | None = None
    fracture_run: int | None = None
    stage1_test_accuracy: float | None = None
    stage2_test_image_accuracy: float | None = None
    stage2_test_study_kappa: float | None = None
    stage2_test_study_kappa_ci: list[float] = field(default_factory=list)
    predicted_studies: list = field(default_factory=list)
    gradcam_dir: str = ""
    report: str = ""
    try_next: str | None = None


QUICK = DemoSettings(patients=40, size=48, stage1_epochs=2, stage2_epochs=2, studies_to_predict=2)


def run_demo(workdir: Path, *, database_url: str | None = None, quick: bool = False,
             say: Callable[[str], None] = lambda message: None, progress: ProgressFactory = silent,
             verbose: str | int = 0) -> DemoSummary:
    """VERBOSE goes to Keras' fit: "auto" shows each epoch's progress bar (a terminal), 0 nothing."""
    settings = QUICK if quick else DemoSettings()
    workdir = Path(workdir).absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(database_url or f"sqlite:///{workdir / 'bonedb.sqlite'}", create=True)
    steps = 11
    summary = DemoSummary(str(workdir), settings, describe(engine))

    def step(number: int, text: str) -> None:
        say(f"[{number}/{steps}] {text}")

    step(1, "database schema")
    migrate.upgrade(engine)
    data = workdir / "data"
    step(2, f"synthetic MURA in {data}")
    if (data / "MURA-v1.1" / "valid_labeled_studies.csv").exists():
        say("      already there, reused")
        if not is_synthetic(data / "MURA-v1.1"):  # drawn by a demo before synth left its marker
            mark_synthetic(data, {"patients": settings.patients, "size": settings.size, "seed": 0})
    else:
        synth_mura(data, patients=settings.patients, size=settings.size, seed=0, progress=progress)
    step(3, "ingest with --verify")
    report = ingest_mura(engine, data, verify=True, progress=progress)
    summary.images = report.stats.totals[0].images if report.stats and report.stats.totals else 0
    step(4, f"patient-level split {SPLIT!r}")
    create_split(engine, SPLIT, SplitOptions("mura-v1.1", BODY_PARTS, test_from="carve", val=0.15, test=0.15, seed=1))
    step(5, "leakage audit")
    audit = audit_split(engine, SPLIT, progress=progress)
    summary.leaks = audit.leaks
    step(6, "export the stage-2 tree")
    export_split(engine, SPLIT, workdir / "exports" / FRACTURE, stage=FRACTURE, combined=True, force=True)
    # TensorBoard logs on, as by default (`tensorboard --logdir WORKDIR/runs`); flips only, so that the
    # small CNN finds the breaks within the demo's epochs.
    base = TrainConfig(stage=BODYPART, split=SPLIT, arch="cnn", weights="none", image_size=settings.size,
                       augment="flip", runs_dir=str(workdir / "runs"), lr=1e-3)
    step(7, "train stage 1 (body part)")
    stage1 = _train_or_reuse(engine, replace(base, epochs=settings.stage1_epochs, patience=10), progress, verbose)
    step(8, "train stage 2 (normal or abnormal, one model over all parts)")
    stage2 = _train_or_reuse(engine, replace(base, stage=FRACTURE, shared=True, epochs=settings.stage2_epochs,
                                             patience=30, batch_size=16), progress, verbose)
    step(9, "evaluate both on the test subset")
    evaluations = {run: latest_result(engine, get_run(engine, run), "test") or evaluate_run(engine, run, "test")
                   for run in (stage1, stage2)}
    step(10, "predict test studies with Grad-CAM")
    tests = split_image_paths(engine, SPLIT)["test"]
    studies = sorted({str(data / Path(p).parent) for p in tests})[: settings.studies_to_predict]
    prediction = Predictor(engine, stage1, stage2).predict([Path(s) for s in studies], workdir / "gradcam")
    step(11, "report")
    report_path = build_report(engine, [stage1, stage2], workdir / "report.html").path

    stage1_eval, stage2_eval = evaluations[stage1].overall, evaluations[stage2].overall
    assert isinstance(stage1_eval, MulticlassMetrics) and isinstance(stage2_eval, BinaryMetrics)
    summary.bodypart_run, summary.fracture_run = stage1, stage2
    summary.stage1_test_accuracy = stage1_eval.accuracy
    summary.stage2_test_image_accuracy = stage2_eval.image.accuracy
    summary.stage2_test_study_kappa = stage2_eval.study.kappa
    summary.stage2_test_study_kappa_ci = stage2_eval.study.kappa_ci or []
    summary.predicted_studies = prediction.studies
    summary.gradcam_dir = str(workdir / "gradcam")
    summary.report = str(report_path)
    summary.try_next = _try_next(workdir, database_url, studies[0]) if studies else None
    engine.dispose()
    return summary


def _try_next(workdir: Path, database_url: str | None, study: str) -> str:
    """A command to run next that uses the demo's own database (its runs are there, not in ./bonedb.sqlite)."""
    # The demo carves its own test subset, so a test study may sit in MURA's train/ folder: say so, or the
    # hint reads as predicting on training data.
    where = "   # a study of the demo split's test subset, never trained on"
    if database_url is None:
        return f"cd {workdir} && bonedb predict {study}{where}"
    masked = mask_url(database_url)
    hint = "; with your password in place of ***" if masked != database_url else ""
    return f"bonedb --database-url '{masked}' predict {study}{where}{hint}"


def _train_or_reuse(engine: Engine, config: TrainConfig, progress, verbose) -> int:
    """A finished run with exactly these parameters is reused; otherwise train one."""
    wanted = {**config.to_parameters(), "parts": None}
    for run in reversed(list_runs(engine, stage=config.stage, status="finished")):
        stored = {**TrainConfig.from_parameters(run.parameters).to_parameters(), "parts": None}
        if run.split_name == config.split and stored == wanted:
            return run.id
    [result] = train(engine, config, progress=progress, verbose=verbose)
    if result.run_id is None:  # only training from an export, without a database, records no run
        raise BonedbError(f"training {config.stage} recorded no run in the demo's database")
    return result.run_id
