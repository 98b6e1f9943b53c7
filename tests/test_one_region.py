"""A one-region dataset (a folder set ingested without --part: every image `unknown`) end to end:
split, export, stage-2 training, evaluation, prediction with no stage 1, and the report."""

from __future__ import annotations

import random

from boneclf.data.export import export_split
from boneclf.data.folder_dataset import ingest_folder
from boneclf.data.radiograph import draw_radiograph
from boneclf.data.splits import SplitOptions, create_split, split_summary
from boneclf.ml.evaluation import evaluate_run
from boneclf.ml.predict import Predictor
from boneclf.ml.training import TrainConfig, train
from boneclf.workflows.report import build_report

from conftest import FAST


def test_unknown_part_dataset_splits_trains_evaluates_predicts_and_reports(engine, tmp_path):
    root = tmp_path / "wrists"
    for k in range(48):
        subset = ("train", "train", "val", "test")[k % 4]
        label = ("fractured", "not fractured")[(k // 4) % 2]
        picture, _ = draw_radiograph("wrist", label == "fractured", 36, 48, random.Random(k))
        (root / subset / label).mkdir(parents=True, exist_ok=True)
        picture.save(root / subset / label / f"x{k:03d}.png")
    ingest_folder(engine, root, dataset="wrists")

    result = create_split(engine, "w", SplitOptions("wrists", (), val=0.2, test=0.2, test_from="carve"))
    assert result.created and split_summary(engine, "w").parameters["parts"] == ["unknown"]
    export = export_split(engine, "w", tmp_path / "out", stage="fracture")
    assert export.images == result.images

    [run] = train(engine, TrainConfig(stage="fracture", split="w", parts=("unknown",), image_size=32, epochs=1,
                                      patience=1, runs_dir=str(tmp_path / "runs"), **FAST), verbose=0)
    evaluation = evaluate_run(engine, run.run_id)
    assert set(evaluation.per_part) == {"unknown"}

    # No body-part run exists, and none is needed: the one-region model takes every image.
    prediction = Predictor(engine, fracture_run=run.run_id).predict([root / "test" / "fractured"])
    assert prediction.images and all(i.error is None and i.part == "unknown" and i.fracture_run == run.run_id
                                      and i.bodypart_run is None for i in prediction.images)

    report = build_report(engine, [run.run_id], tmp_path / "report.html")
    assert report.complete, report.problems
