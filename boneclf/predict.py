"""`bonedb predict`: which bone, normal or abnormal, and where the network looked.

Stage 1 names the body part; each image goes to the stage-2 model for that part (a per-part run
or a shared one); a folder is one study, scored as MURA scores studies (mean of its views).
Images are processed in batches through each model, so a folder costs far less per image than
single calls. A bad file is reported and the others still processed.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from sqlalchemy import Engine

from .errors import BonedbError
from .evaluation import load_run_model
from .metrics import THRESHOLD
from .runs import get_run, list_runs
from .tf_env import tensorflow

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}
BATCH = 32


@dataclass
class ImageResult:
    path: str
    study: str | None = None
    part: str | None = None
    part_probability: float | None = None
    abnormal_probability: float | None = None
    decision: str | None = None  # "abnormal" or "normal" at the run's threshold
    bodypart_run: int | None = None
    fracture_run: int | None = None
    gradcam: str | None = None
    error: str | None = None


@dataclass
class StudyResult:
    study: str
    images: int
    part: str | None
    abnormal_probability: float | None
    decision: str | None
    errors: int = 0


@dataclass
class Prediction:
    images: list[ImageResult] = field(default_factory=list)
    studies: list[StudyResult] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return any(image.error for image in self.images)


def _score(run: dict) -> float:
    metrics = run["metrics"] or {}
    if "study" in metrics:
        return metrics["study"].get("kappa", float("-inf"))
    return metrics.get("accuracy", float("-inf"))


def best_run(engine: Engine, stage: str, part: str | None = None) -> int | None:
    """The finished run of STAGE (covering PART) with the best validation figure; newest on ties."""
    runs = [r for r in list_runs(engine, stage=stage, status="finished") if part is None or part in r["parts"]]
    if not runs:
        return None
    return max(runs, key=lambda r: (_score(r), r["id"]))["id"]


class _LoadedRun:
    def __init__(self, engine: Engine, run_id: int, stage: str):
        row = get_run(engine, run_id)
        if row.stage != stage:
            raise BonedbError(f"run {run_id} is a {row.stage} run, not {stage}: pass a {stage} run")
        self.run_id = run_id
        self.row, self.parameters, self.class_names, self.model = load_run_model(engine, run_id)
        self.parts = row.parts.split(",")
        self.image_size = self.parameters["image_size"]
        self.pad = self.parameters.get("pad", False)
        # A compiled forward pass: eager calls spend more time in Python than in the network.
        self.infer = tensorflow().function(lambda x: self.model(x, training=False), reduce_retracing=True)
        self._explainer = None

    @property
    def explainer(self):
        """Grad-CAM for this run's model, built once so its compiled graph is reused across calls."""
        if self._explainer is None:
            from .gradcam import GradCam

            self._explainer = GradCam(self.model, self.row.architecture)
        return self._explainer


class Predictor:
    def __init__(self, engine: Engine, bodypart_run: int | None = None, fracture_run: int | None = None):
        bodypart_run = bodypart_run or best_run(engine, "bodypart")
        if bodypart_run is None:
            raise BonedbError("no finished body-part run: train one with `bonedb train --stage bodypart`")
        self.stage1 = _LoadedRun(engine, bodypart_run, "bodypart")
        self.engine = engine
        self.fixed_fracture = _LoadedRun(engine, fracture_run, "fracture") if fracture_run else None
        self._stage2: dict[int, _LoadedRun] = {}

    def stage2_for(self, part: str) -> _LoadedRun | None:
        if self.fixed_fracture is not None:
            return self.fixed_fracture if part in self.fixed_fracture.parts else None
        run_id = best_run(self.engine, "fracture", part)
        if run_id is None:
            return None
        if run_id not in self._stage2:
            self._stage2[run_id] = _LoadedRun(self.engine, run_id, "fracture")
        return self._stage2[run_id]

    def predict(self, paths: list[Path], gradcam_dir: Path | None = None) -> Prediction:
        images = _expand(paths)
        result = Prediction(images=[ImageResult(str(p), study=s) for p, s in images])
        pictures: dict[int, Image.Image] = {}
        for index, (path, _study) in enumerate(images):
            try:
                pictures[index] = _load(path)
            except BonedbError as exc:
                result.images[index].error = str(exc)
        self._stage_one(result, pictures)
        self._stage_two(result, pictures, gradcam_dir)
        result.studies = _studies(result.images)
        return result

    def _stage_one(self, result: Prediction, pictures: dict[int, Image.Image]) -> None:
        run = self.stage1
        order = sorted(pictures)
        for start in range(0, len(order), BATCH):
            chunk = order[start:start + BATCH]
            batch = np.stack([_model_input(pictures[i], run.image_size, run.pad) for i in chunk])
            probabilities = run.infer(batch).numpy()
            for i, p in zip(chunk, probabilities):
                image = result.images[i]
                image.part = run.class_names[int(np.argmax(p))]
                image.part_probability = float(np.max(p))
                image.bodypart_run = run.run_id

    def _stage_two(self, result: Prediction, pictures: dict[int, Image.Image], gradcam_dir: Path | None) -> None:
        from .gradcam import overlay

        routes: dict[int, list[int]] = {}
        runs: dict[int, _LoadedRun] = {}
        for i in sorted(pictures):
            image = result.images[i]
            run = self.stage2_for(image.part)
            if run is None:
                image.error = (f"no stage-2 model for {image.part}: train one with "
                               f"`bonedb train --stage fracture --parts {image.part}`")
                continue
            routes.setdefault(run.run_id, []).append(i)
            runs[run.run_id] = run
        if gradcam_dir is not None:
            gradcam_dir.mkdir(parents=True, exist_ok=True)
        for run_id, indices in routes.items():
            run = runs[run_id]
            explainer = run.explainer if gradcam_dir is not None else None
            for start in range(0, len(indices), BATCH):
                chunk = indices[start:start + BATCH]
                batch = np.stack([_model_input(pictures[i], run.image_size, run.pad) for i in chunk])
                if explainer is not None:
                    heatmaps, outputs = explainer(batch)
                else:
                    heatmaps, outputs = None, run.infer(batch).numpy()
                for k, i in enumerate(chunk):
                    image = result.images[i]
                    p = float(outputs[k][0])
                    image.abnormal_probability = p
                    image.decision = "abnormal" if p > THRESHOLD else "normal"
                    image.fracture_run = run_id
                    if heatmaps is not None:
                        target = gradcam_dir / f"{i:04d}_{Path(image.path).stem}_gradcam.png"
                        overlay(pictures[i], heatmaps[k]).save(target)
                        image.gradcam = str(target)


def _expand(paths: list[Path]) -> list[tuple[Path, str | None]]:
    """Files stay single images; a folder is one study of the images directly inside it."""
    images: list[tuple[Path, str | None]] = []
    for path in paths:
        path = Path(path)
        if path.is_dir():
            views = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not views:
                raise BonedbError(f"{path}: no .png or .jpg images in this folder")
            images += [(view, str(path)) for view in views]
        else:
            images.append((path, None))
    return images


def _load(path: Path) -> Image.Image:
    try:
        with Image.open(path) as image:
            image.load()
            return image.convert("L")
    except FileNotFoundError:
        raise BonedbError(f"{path}: no such file") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise BonedbError(f"{path}: not a readable image ({exc})") from None


def _model_input(picture: Image.Image, size: int, pad: bool) -> np.ndarray:
    """The same resize as training (TensorFlow, antialiased), grayscale to RGB, values 0..255."""
    tf = tensorflow()
    pixels = tf.constant(np.asarray(picture, np.uint8)[..., None])
    if pad:
        resized = tf.image.resize_with_pad(pixels, size, size, antialias=True)
    else:
        resized = tf.image.resize(pixels, (size, size), antialias=True)
    resized = tf.clip_by_value(tf.round(resized), 0, 255)
    return np.repeat(resized.numpy().astype(np.float32), 3, axis=2)


def _studies(images: list[ImageResult]) -> list[StudyResult]:
    grouped: dict[str, list[ImageResult]] = {}
    for image in images:
        if image.study:
            grouped.setdefault(image.study, []).append(image)
    studies = []
    for study, views in grouped.items():
        scored = [v for v in views if v.abnormal_probability is not None]
        probability = float(np.mean([v.abnormal_probability for v in scored])) if scored else None
        parts = [v.part for v in scored]
        studies.append(StudyResult(
            study=study, images=len(scored), part=max(set(parts), key=parts.count) if parts else None,
            abnormal_probability=probability,
            decision=None if probability is None else ("abnormal" if probability > THRESHOLD else "normal"),
            errors=sum(1 for v in views if v.error),
        ))
    return studies


def prediction_json_lines(prediction: Prediction) -> list[str]:
    return ([json.dumps({"kind": "image", **asdict(i)}) for i in prediction.images]
            + [json.dumps({"kind": "study", **asdict(s)}) for s in prediction.studies])
