"""`bonedb evaluate`: score a finished run on its split's test (or val) subset, the way MURA is scored."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from sqlalchemy import Engine

from .errors import BonedbError
from .metrics import binary_metrics, multiclass_metrics
from .pipeline import Examples, decoded_dataset, to_rgb
from .runs import get_run, save_evaluation
from .tf_env import keras as _keras
from .tf_env import tensorflow
from .training_data import load_stage_data


def load_run_model(engine: Engine, run_id: int):
    """(run row, parameters, class names, Keras model) of a finished run."""
    from . import layers  # noqa: F401  (registers bonedb's custom layers for loading)

    row = get_run(engine, run_id)
    if row.status != "finished":
        raise BonedbError(f"run {run_id} is {row.status}, not finished: "
                          + (f"resume it with `bonedb train --resume {run_id}`" if row.status != "running" else "wait for it"))
    folder = Path(row.artifact_dir)
    model_file = folder / "model.keras"
    if not model_file.is_file():
        raise BonedbError(f"run {run_id}: {model_file} is missing; the run's folder was moved or deleted")
    parameters = json.loads(row.parameters)
    class_names = json.loads((folder / "class_names.json").read_text())
    return row, parameters, class_names, _keras().models.load_model(model_file)


def predict(model, examples: Examples, image_size: int, pad: bool, canny: bool = False,
            batch_size: int = 64) -> tuple[np.ndarray, list[int]]:
    """(probabilities, indices of the examples that decoded): undecodable files are left out."""
    tf = tensorflow()
    ds = decoded_dataset(examples, image_size, pad=pad, canny=canny, cache=None)
    indices: list[int] = []

    def keep(i, x, _y):
        return i, to_rgb(x)

    outputs = []
    for batch_indices, images in ds.map(keep, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size):
        indices.extend(batch_indices.numpy().tolist())
        outputs.append(model(images, training=False).numpy())
    if not outputs:
        return np.zeros((0, model.output_shape[-1])), []
    return np.concatenate(outputs), indices


def evaluate_run(engine: Engine, run_id: int, subset: str = "test") -> dict:
    if subset not in ("test", "val"):
        raise BonedbError(f"--subset {subset!r}: choose test or val")
    row, parameters, class_names, model = load_run_model(engine, run_id)
    data = load_stage_data(engine, row.split_name, row.stage, tuple(row.parts.split(",")))
    examples = data.subsets[subset]
    if not len(examples):
        raise BonedbError(f"split {row.split_name!r} has no {subset} images for {row.parts}")
    probabilities, kept = predict(model, examples, parameters["image_size"], parameters["pad"], parameters["canny"])
    used = examples.take(kept)
    result = {"run_id": run_id, "subset": subset, "stage": row.stage, "architecture": row.architecture,
              "skipped_images": [examples.paths[i] for i in sorted(set(range(len(examples))) - set(kept))]}
    if row.stage == "bodypart":
        result["overall"] = multiclass_metrics(used.labels, probabilities, class_names)
    else:
        scores = probabilities.reshape(-1)
        result["overall"] = binary_metrics(used.labels, scores, used.studies)
        result["per_part"] = {
            part: binary_metrics([y for y, p in zip(used.labels, used.parts) if p == part],
                                 [s for s, p in zip(scores, used.parts) if p == part],
                                 [k for k, p in zip(used.studies, used.parts) if p == part])
            for part in sorted(set(used.parts))
        }
    _write_predictions(Path(row.artifact_dir) / f"predictions_{subset}.csv", used, probabilities, class_names)
    result["evaluation_id"] = save_evaluation(engine, run_id, subset, result)
    return result


def _write_predictions(path: Path, examples: Examples, probabilities: np.ndarray, class_names: list[str]) -> None:
    """Per-image predictions, for reports and galleries."""
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        columns = ["probability"] if probabilities.shape[1] == 1 else [f"p_{c}" for c in class_names]
        writer.writerow(["image_id", "path", "part", "study", "label", *columns])
        for i in range(len(examples)):
            writer.writerow([examples.image_ids[i], examples.paths[i], examples.parts[i], examples.studies[i],
                             examples.labels[i], *(f"{p:.6f}" for p in probabilities[i])])


def per_part_rows(result: dict) -> list[dict]:
    """A stage-2 evaluation as one row per body part plus "overall": the paper's table, with intervals."""
    rows = []
    for part, m in [*result["per_part"].items(), ("overall", result["overall"])]:
        image, study = m["image"], m["study"]
        rows.append({"part": part, "images": image["n"], "image_acc": image["accuracy"], "image_auc": image["auc"],
                     "studies": study["n"], "study_acc": study["accuracy"],
                     "study_acc_95ci": format_interval(study["accuracy_ci"]), "kappa": study["kappa"],
                     "kappa_95ci": format_interval(study["kappa_ci"]), "study_auc": study["auc"]})
    return rows


def format_interval(interval) -> str:
    return f"{interval[0]:.3f} to {interval[1]:.3f}"
