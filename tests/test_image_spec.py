"""One image spec from training to prediction: the same file gives the same model input and probability."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from boneclf.data.splits import split_image_paths
from boneclf.ml.evaluation import evaluate_run
from boneclf.ml.image_spec import ImageSpec
from boneclf.ml.pipeline import Examples, decoded_dataset
from boneclf.ml.predict import Predictor
from boneclf.ml.training import TrainConfig, train
from boneclf.store.runs import get_run

from conftest import FAST, synth_sqlite


@pytest.fixture(scope="module")
def spec_db(tmp_path_factory):
    folder = tmp_path_factory.mktemp("spec")
    engine = synth_sqlite(folder, 40, 32)
    yield engine, folder
    engine.dispose()


@pytest.mark.parametrize("spec", [ImageSpec(32), ImageSpec(32, pad=True), ImageSpec(40, canny=True),
                                  ImageSpec(24, pad=True, canny=True)], ids=["plain", "pad", "canny", "pad+canny"])
def test_single_file_decode_is_the_pipelines_decode(spec_db, spec):
    engine, folder = spec_db
    paths = [str(folder / "data" / p) for p in split_image_paths(engine, "s")["test"][:6]]
    examples = Examples(list(range(len(paths))), paths, [0] * len(paths), ["x"] * len(paths), ["x"] * len(paths))
    from_pipeline = {int(i): x.numpy() for i, x, _y in decoded_dataset(examples, spec, cache=None)}
    for index, path in enumerate(paths):
        full, model_input = spec.load(Path(path).read_bytes())
        assert full.ndim == 2 and full.dtype == np.uint8
        assert model_input.shape == (spec.size, spec.size, 3)
        np.testing.assert_array_equal(model_input[..., 0], from_pipeline[index][..., 0].astype(np.float32))


@pytest.mark.parametrize("option", ["canny", "pad"])
def test_evaluate_and_predict_agree_on_every_test_image(spec_db, tmp_path, option):
    engine, folder = spec_db
    runs_dir = str(tmp_path / "runs")
    [stage1] = train(engine, TrainConfig(stage="bodypart", split="s", image_size=32, epochs=1, runs_dir=runs_dir,
                                         **FAST), verbose=0)
    [stage2] = train(engine, TrainConfig(stage="fracture", split="s", shared=True, image_size=32, epochs=1,
                                         runs_dir=runs_dir, **{option: True}, **FAST), verbose=0)
    assert get_run(engine, stage2.run_id).image_spec[option] is True
    evaluate_run(engine, stage2.run_id, "test")
    with open(Path(stage2.artifact_dir) / "predictions_test.csv", newline="") as fh:
        evaluated = {row["path"]: float(row["probability"]) for row in csv.DictReader(fh)}
    paths = sorted(evaluated)
    prediction = Predictor(engine, stage1.run_id, stage2.run_id).predict([Path(p) for p in paths])
    predicted = {image.path: image.abnormal_probability for image in prediction.images}
    assert len(paths) >= 10 and not prediction.failed
    differences = [abs(predicted[p] - evaluated[p]) for p in paths]
    # predictions_test.csv keeps 6 decimals; anything beyond rounding would mean different inputs.
    assert max(differences) <= 1e-5, max(differences)
