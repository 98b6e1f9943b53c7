"""Two-stage prediction: routing by the predicted part, study aggregation, Grad-CAM on the break, bad input."""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from boneclf.cli.main import cli
from boneclf.data.radiograph import draw_radiograph
from boneclf.data.splits import split_image_paths
from boneclf.errors import BonedbError
from boneclf.ml.evaluation import load_run_model
from boneclf.ml.gradcam import GradCam
from boneclf.ml.predict import Predictor
from boneclf.ml.training import TrainConfig, train
from boneclf.vocabulary import BODY_PARTS

from conftest import FAST


def test_gradcam_peak_falls_on_the_planted_break(trained):
    explain = GradCam(load_run_model(trained.engine, trained.fracture_run).model, "cnn")
    distances = []
    for part in BODY_PARTS:
        for seed in range(4):
            picture, break_at = draw_radiograph(part, True, 64, 64, random.Random(f"cam-{part}-{seed}"))
            image = np.repeat(np.asarray(picture, np.float32)[..., None], 3, axis=2)[None]
            heatmap, output = explain(image, class_index=1)
            if output[0][0] <= 0.5:
                continue  # explain detections, not misses
            y, x = np.unravel_index(np.argmax(heatmap[0]), heatmap[0].shape)
            distances.append(np.hypot(x - break_at[0], y - break_at[1]))
    distances = np.array(distances)
    assert len(distances) >= 20, "the model detects most planted breaks"
    # The last convolution sees 8 x 8 cells of 8 px at this size: "on the break" is within 1.5 cells.
    assert np.median(distances) <= 10, distances
    assert (distances <= 12).mean() >= 0.8, distances
    # A point picked at random would be about 25 px away on average.


def test_routing_by_part_and_study_mean(trained, tmp_path):
    root = trained.folder / "data"
    test_paths = split_image_paths(trained.engine, "s")["test"]
    sample = test_paths[:40]
    prediction = Predictor(trained.engine).predict([root / p for p in sample])
    right = [img.part == p.split("/")[2][3:].lower() for img, p in zip(prediction.images, sample)]
    assert np.mean(right) >= 0.95
    assert all(img.bodypart_run == trained.bodypart_run and img.fracture_run == trained.fracture_run
               for img in prediction.images)
    # A folder is one study: its probability is the mean over its views.
    study = root / Path(test_paths[0]).parent
    result = Predictor(trained.engine).predict([study])
    [summary] = result.studies
    views = [img.abnormal_probability for img in result.images]
    assert summary.images == len(views) == len(list(study.glob("*.png")))
    assert summary.abnormal_probability == pytest.approx(float(np.mean(views)))
    assert summary.decision == ("abnormal" if np.mean(views) > 0.5 else "normal")


def test_part_without_stage2_model_and_bad_files(trained, tmp_path):
    engine = trained.engine
    [shoulder] = train(engine, TrainConfig(stage="fracture", split="s", parts=("shoulder",), image_size=64, epochs=1,
                                           runs_dir=str(tmp_path / "runs"), **FAST), verbose=0)
    root = trained.folder / "data"
    paths = split_image_paths(engine, "s")["test"]
    shoulder_image = next(p for p in paths if "XR_SHOULDER" in p)
    wrist_image = next(p for p in paths if "XR_WRIST" in p)
    not_image = tmp_path / "notes.png"
    not_image.write_text("not a picture")
    truncated = tmp_path / "cut.png"
    truncated.write_bytes((root / wrist_image).read_bytes()[:80])
    prediction = Predictor(engine, fracture_run=shoulder.run_id).predict(
        [root / shoulder_image, root / wrist_image, not_image, truncated], gradcam_dir=tmp_path / "cams")
    first, second, third, fourth = prediction.images
    assert first.error is None and first.fracture_run == shoulder.run_id and first.decision in ("normal", "abnormal")
    assert Image.open(first.gradcam).size == Image.open(root / shoulder_image).size
    assert "no stage-2 model for wrist" in second.error
    assert "not a readable image" in third.error and "not a readable image" in fourth.error
    assert prediction.failed


def test_missing_and_wrong_stage_runs(trained):
    with pytest.raises(BonedbError, match="no training run 999"):
        Predictor(trained.engine, bodypart_run=999)
    with pytest.raises(BonedbError, match="is a fracture run, not bodypart"):
        Predictor(trained.engine, bodypart_run=trained.fracture_run)
    with pytest.raises(BonedbError, match="is a bodypart run, not fracture"):
        Predictor(trained.engine, fracture_run=trained.bodypart_run)


def test_cli_json_and_exit_status(trained, tmp_path):
    url = trained.engine.url.render_as_string(hide_password=False)
    root = trained.folder / "data"
    study = root / Path(split_image_paths(trained.engine, "s")["test"][0]).parent
    copy = tmp_path / "study"
    shutil.copytree(study, copy)
    runner = CliRunner()
    result = runner.invoke(cli, ["--database-url", url, "predict", str(copy), "--json", "--gradcam", str(tmp_path / "g")])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.output.strip().splitlines()]
    assert [line["kind"] for line in lines].count("study") == 1
    assert all(Path(line["gradcam"]).is_file() for line in lines if line["kind"] == "image")
    # The models learned on drawn pictures: each answer says so, as one may point them at a real X-ray.
    assert all(line["synthetic_data"] is True for line in lines if line["kind"] == "image")
    (copy / "junk.png").write_bytes(b"\x89PNG broken")
    # In a folder too, a broken link and a FIFO are named, as when given by themselves, not left out unsaid.
    (copy / "gone.png").symlink_to(tmp_path / "elsewhere.png")
    os.mkfifo(copy / "pipe.png")
    result = runner.invoke(cli, ["--database-url", url, "predict", str(copy)])
    assert result.exit_code == 1 and "junk.png: not a readable image" in result.stderr
    errors = result.stderr.splitlines()
    assert f"error: {copy / 'gone.png'}: a broken symbolic link (to {tmp_path / 'elsewhere.png'}, which is gone)" \
        in errors, errors
    assert f"error: {copy / 'pipe.png'}: not a regular file (a FIFO)" in errors, errors
    [warning] = [line for line in errors if line.startswith("warning:")]
    assert warning == (f"warning: runs {trained.bodypart_run}, {trained.fracture_run} trained on synthetic pictures "
                       "(dataset mura-v1.1, drawn by `bonedb synth`): the answers say nothing about a real radiograph")


def test_gradcam_files_are_named_after_their_images_and_never_overwritten(trained, tmp_path):
    """Issue 9, defect 6: names say dataset, part, patient, study and image (or the file's own name); a
    second call beside the first adds -2 instead of overwriting; one view reads "1 view"."""
    root = trained.folder / "data"
    first_path = split_image_paths(trained.engine, "s")["test"][0]
    study = root / Path(first_path).parent
    views = sorted(p.relative_to(root).as_posix() for p in study.glob("*.png"))
    outside = tmp_path / "elsewhere" / "image1.png"
    outside.parent.mkdir()
    shutil.copyfile(root / first_path, outside)

    def expected(path: str) -> str:  # MURA-v1.1/train/XR_WRIST/patient00012/study1_positive/image1.png
        _, _, part, patient, study_folder, image = path.split("/")
        return (f"mura-v1.1_{part[3:].lower()}_{patient}_study{study_folder.split('_')[0][5:]}_"
                f"{image.removesuffix('.png')}_gradcam.png")

    cams = tmp_path / "cams"
    first = Predictor(trained.engine).predict([study, outside], gradcam_dir=cams)
    names = [Path(image.gradcam).name for image in first.images]
    assert names == [expected(v) for v in views] + ["image1_gradcam.png"]
    second = Predictor(trained.engine).predict([study], gradcam_dir=cams)
    assert [Path(image.gradcam).name for image in second.images] == [
        name.replace("_gradcam.png", "_gradcam-2.png") for name in names[:-1]]
    assert len(list(cams.iterdir())) == 2 * len(views) + 1, "nothing overwritten"

    single = tmp_path / "one-view"
    single.mkdir()
    shutil.copyfile(root / first_path, single / "image1.png")
    url = trained.engine.url.render_as_string(hide_password=False)
    result = CliRunner().invoke(cli, ["--database-url", url, "predict", str(single)])
    assert ", 1 view, mean p(abnormal)" in result.output


def test_a_file_that_is_no_image_is_one_line_naming_it_and_what_is_wrong(trained, tmp_path):
    url = trained.engine.url.render_as_string(hide_password=False)
    text_file = tmp_path / "notimage.png"
    text_file.write_text("these are notes, not a picture\n")
    tiff = tmp_path / "scan.png"
    Image.new("L", (40, 40)).save(tiff, format="TIFF")
    result = CliRunner().invoke(cli, ["--database-url", url, "predict", str(text_file), str(tiff)])
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"error: {text_file}: not a readable image: its content is not PNG, JPEG, GIF or BMP",
        f"error: {tiff}: not a readable image: TIFF content, which bonedb does not read: convert it to PNG or JPEG",
    ]
    assert "function_node" not in result.output and "DecodeImage" not in result.output
