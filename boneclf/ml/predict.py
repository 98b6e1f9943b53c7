"""`bonedb predict`: which bone, normal or abnormal, and where the network looked.

Stage 1 names the body part; each image goes to the stage-2 model for that part (a per-part run
or a shared one); a folder is one study, scored as MURA scores studies (mean of its views).
Images are processed in batches through each model, so a folder costs far less per image than
single calls. A bad file is reported and the others still processed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from sqlalchemy import Engine

from boneclf.data.image_names import free_path, identify_images, picture_name
from boneclf.data.verify import broken_link, read_regular
from boneclf.errors import BonedbError
from boneclf.results import Result, plain
from boneclf.store.queries import ImageIdentity
from boneclf.store.runs import RunRecord, list_runs
from boneclf.vocabulary import BODYPART, FRACTURE, UNKNOWN_PART

from .evaluation import load_run_model
from .gradcam import GradCam, explained_overlays
from .image_spec import screen
from .metrics import THRESHOLD
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
    synthetic_data: bool = False  # a run that answered for it trained on synthetic pictures, not radiographs


@dataclass
class StudyResult:
    study: str
    images: int
    part: str | None
    abnormal_probability: float | None
    decision: str | None
    errors: int = 0


@dataclass
class Prediction(Result):
    images: list[ImageResult] = field(default_factory=list)
    studies: list[StudyResult] = field(default_factory=list)
    # The runs that answered trained on synthetic pictures: said once, as the demo's model may be
    # pointed at a real X-ray (None: every answer comes from real data).
    warning: str | None = None

    @property
    def failed(self) -> bool:
        return any(image.error for image in self.images)


def best_run(runs: list[RunRecord], part: str | None = None) -> RunRecord | None:
    """The finished run (covering PART) with the best validation figure; newest on ties."""
    covering = [r for r in runs if part is None or part in r.parts]
    return max(covering, key=lambda r: (r.validation_score, r.id)) if covering else None


class _ReadyRun:
    """A loaded run with a compiled forward pass and, on demand, its Grad-CAM explainer."""

    def __init__(self, engine: Engine, run_id: int, stage: str):
        loaded = load_run_model(engine, run_id)
        if loaded.run.stage != stage:
            raise BonedbError(f"run {run_id} is a {loaded.run.stage} run, not {stage}: pass a {stage} run")
        self.run_id = run_id
        self.run, self.spec, self.class_names, self.model = loaded.run, loaded.spec, loaded.class_names, loaded.model
        self.parts = loaded.run.parts
        # A compiled forward pass: eager calls spend more time in Python than in the network.
        self.infer = tensorflow().function(lambda x: self.model(x, training=False), reduce_retracing=True)
        self._explainer: GradCam | None = None

    @property
    def explainer(self) -> GradCam:
        """Grad-CAM for this run's model, built once so its compiled graph is reused across calls."""
        if self._explainer is None:
            self._explainer = GradCam(self.model, self.run.architecture)
        return self._explainer


class Predictor:
    """Two-stage prediction. The runs to use are chosen once, when the predictor is made."""

    def __init__(self, engine: Engine, bodypart_run: int | None = None, fracture_run: int | None = None):
        self.engine = engine
        self.fixed_fracture = _ReadyRun(engine, fracture_run, FRACTURE) if fracture_run else None
        # A stage-2 run of one region needs no router when there is none to have: a folder set's
        # `unknown` part (no body-part model can name it), or no finished body-part run at all. A MURA
        # part's run still goes through stage 1 when one exists, which turns away other parts.
        self.stage1: _ReadyRun | None = None
        fixed_parts = self.fixed_fracture.parts if self.fixed_fracture is not None else []
        if bodypart_run is None:
            best = best_run(list_runs(engine, stage=BODYPART, status="finished"))
            if len(fixed_parts) == 1 and (best is None or fixed_parts[0] == UNKNOWN_PART):
                best = None
            elif best is None:
                raise BonedbError("no finished body-part run: train one with `bonedb train --stage bodypart`, or "
                                  "pass --fracture-run with a run of one body part (no stage 1 needed)")
            bodypart_run = best.id if best is not None else None
        if bodypart_run is not None:
            self.stage1 = _ReadyRun(engine, bodypart_run, BODYPART)
        # Read once per predictor, not once per image: the stage-2 candidates and the best per part.
        self._candidates = [] if fracture_run else list_runs(engine, stage=FRACTURE, status="finished")
        self._best_for: dict[str, int | None] = {}
        self._stage2: dict[int, _ReadyRun] = {}

    @property
    def first(self) -> _ReadyRun:
        """The run that reads every image first: stage 1, or without one the fixed stage-2 run."""
        run = self.stage1 or self.fixed_fracture
        if run is None:  # __init__ sets one of them or raises
            raise BonedbError("no run to predict with: pass --bodypart-run or --fracture-run")
        return run

    def stage2_for(self, part: str) -> _ReadyRun | None:
        if self.fixed_fracture is not None:
            return self.fixed_fracture if part in self.fixed_fracture.parts else None
        if part not in self._best_for:
            best = best_run(self._candidates, part)
            self._best_for[part] = best.id if best else None
        run_id = self._best_for[part]
        if run_id is None:
            return None
        if run_id not in self._stage2:
            self._stage2[run_id] = _ReadyRun(self.engine, run_id, FRACTURE)
        return self._stage2[run_id]

    def predict(self, paths: list[Path], gradcam_dir: Path | None = None) -> Prediction:
        images = _expand(paths)
        result = Prediction(images=[ImageResult(str(p), study=s) for p, s in images])
        files: dict[int, bytes] = {}
        for index, (path, _study) in enumerate(images):
            try:
                files[index] = _read(path)
            except BonedbError as exc:
                result.images[index].error = str(exc)
        pictures, inputs = self._stage_one(result, files)
        self._stage_two(result, files, pictures, inputs, gradcam_dir)
        result.studies = _studies(result.images)
        self._mark_synthetic(result)
        return result

    def _mark_synthetic(self, result: Prediction) -> None:
        """Flag the answers of runs trained on synthetic pictures, and word the warning for them."""
        ready = [self.stage1, self.fixed_fracture, *self._stage2.values()]
        synthetic = {r.run_id: r.run for r in ready if r is not None and r.run.data == "synthetic"}
        used: set[int] = set()
        for image in result.images:
            mine = {run_id for run_id in (image.bodypart_run, image.fracture_run) if run_id in synthetic}
            image.synthetic_data = bool(mine)
            used |= mine
        if used:
            names = sorted({synthetic[run_id].dataset or "?" for run_id in used})
            result.warning = (f"run{'s' if len(used) > 1 else ''} {', '.join(map(str, sorted(used)))} trained on "
                              f"synthetic pictures (dataset {', '.join(names)}, drawn by `bonedb synth`): "
                              "the answers say nothing about a real radiograph")

    def _stage_one(self, result: Prediction, files: dict[int, bytes]) -> tuple[dict, dict]:
        """Body part per image; returns the full-size pictures and stage-1 inputs of the images that decoded.
        Without stage 1, the fixed stage-2 run's one part is every image's part (and its inputs are made)."""
        run = self.first
        pictures: dict[int, np.ndarray] = {}
        inputs: dict[int, np.ndarray] = {}
        for i in sorted(files):
            try:
                pictures[i], inputs[i] = run.spec.load(files[i])
            except BonedbError as exc:
                result.images[i].error = f"{result.images[i].path}: {exc}"
        if self.stage1 is None:
            for i in inputs:
                result.images[i].part = run.parts[0]
            return pictures, inputs
        order = sorted(inputs)
        for start in range(0, len(order), BATCH):
            chunk = order[start:start + BATCH]
            probabilities = run.infer(np.stack([inputs[i] for i in chunk])).numpy()
            for i, p in zip(chunk, probabilities):
                image = result.images[i]
                image.part = run.class_names[int(np.argmax(p))]
                image.part_probability = float(np.max(p))
                image.bodypart_run = run.run_id
        return pictures, inputs

    def _stage_two(self, result: Prediction, files: dict[int, bytes], pictures: dict[int, np.ndarray],
                   inputs: dict[int, np.ndarray], gradcam_dir: Path | None) -> None:
        routes: dict[int, list[int]] = {}
        runs: dict[int, _ReadyRun] = {}
        for i in sorted(pictures):
            image = result.images[i]
            run = self.stage2_for(image.part) if image.part is not None else None
            if run is None:
                image.error = (f"no stage-2 model for {image.part}: train one with "
                               f"`bonedb train --stage fracture --parts {image.part}`")
                continue
            routes.setdefault(run.run_id, []).append(i)
            runs[run.run_id] = run
        known: dict[str, ImageIdentity] = {}
        if gradcam_dir is not None:
            gradcam_dir.mkdir(parents=True, exist_ok=True)
            # Overlays are named after their images (see image_names), beside earlier ones, never over them.
            known = identify_images(self.engine, [result.images[i].path for i in pictures])
        for run_id, indices in routes.items():
            run = runs[run_id]
            # The stage-2 run's own image spec: it may differ from stage 1's (size, pad, Canny).
            same = run.spec == self.first.spec
            batch = [inputs[i] if same else run.spec.load(files[i])[1] for i in indices]
            if gradcam_dir is None:
                for start in range(0, len(indices), BATCH):
                    outputs = run.infer(np.stack(batch[start:start + BATCH])).numpy()
                    for i, output in zip(indices[start:start + BATCH], outputs):
                        _decide(result.images[i], output, run_id)
                continue
            drawn = explained_overlays(run.explainer, run.spec, [pictures[i] for i in indices], batch,
                                       batch_size=BATCH)
            for i, (output, picture) in zip(indices, drawn):
                image = result.images[i]
                _decide(image, output, run_id)
                target = free_path(gradcam_dir, picture_name(image.path, known.get(image.path)))
                picture.save(target)
                image.gradcam = str(target)


def _decide(image: ImageResult, output: np.ndarray, run_id: int) -> None:
    """A stage-2 output (the sigmoid's probability of abnormal) as the image's answer."""
    p = float(output[0])
    image.abnormal_probability = p
    image.decision = "abnormal" if p > THRESHOLD else "normal"
    image.fracture_run = run_id


def _expand(paths: list[Path]) -> list[tuple[Path, str | None]]:
    """Files stay single images; a folder is one study of the images directly inside it. Everything there
    named like an image but a folder is a view: a broken link or a FIFO is then named and refused by
    `_read`, as when it is given by itself, rather than left out unsaid."""
    images: list[tuple[Path, str | None]] = []
    for path in paths:
        path = Path(path)
        if path.is_dir():
            views = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.is_dir())
            if not views:
                raise BonedbError(f"{path}: no .png or .jpg images in this folder")
            images += [(view, str(path)) for view in views]
        else:
            images.append((path, None))
    return images


def refused_outright(paths: list[Path]) -> Prediction | None:
    """The prediction of PATHS when no file among them may be an image: each one read and checked from its
    header (missing, not a regular file, over the pixel limit, no image format), with no model loaded, so
    that a bomb is refused in a moment rather than after TensorFlow and the models load. None as soon as one
    file may be an image: then `Predictor.predict` reads them all and says the same of the others."""
    result = Prediction(images=[ImageResult(str(p), study=s) for p, s in _expand(paths)])
    for image in result.images:
        try:
            screen(_read(Path(image.path)))
        except BonedbError as exc:
            image.error = str(exc) if str(exc).startswith(f"{image.path}: ") else f"{image.path}: {exc}"
        else:
            return None
    result.studies = _studies(result.images)
    return result


def _read(path: Path) -> bytes:
    try:
        return read_regular(Path(path))  # a FIFO named like an image would block forever
    except FileNotFoundError:
        raise BonedbError(f"{path}: {broken_link(Path(path)) or 'no such file'}") from None
    except OSError as exc:
        raise BonedbError(f"{path}: cannot read ({exc.strerror})") from None
    except BonedbError as exc:
        raise BonedbError(f"{path}: {exc}") from None


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
    """One JSON line per image, then one per study (a stream a program can read as it comes)."""
    return ([json.dumps({"kind": "image", **plain(i)}) for i in prediction.images]
            + [json.dumps({"kind": "study", **plain(s)}) for s in prediction.studies])


@dataclass
class Explanation:
    """One image as one run sees it: its answer and where it looked (the overlay at the picture's size)."""

    outcome: str | None  # the body part (stage 1) or abnormal / normal (stage 2)
    probability: float | None  # of that outcome (stage 1) or of abnormal (stage 2)
    overlay: Image.Image | None
    error: str | None = None


class RunExplainer:
    """A finished run's prediction and Grad-CAM on single studies, for `bonedb serve`'s run pages.

    The model and its compiled Grad-CAM are loaded once; callers share one explainer per run (and
    serialize calls: TensorFlow graphs are not re-entrant across threads here).
    """

    def __init__(self, engine: Engine, run_id: int):
        from boneclf.store.runs import get_run

        self.ready = _ReadyRun(engine, run_id, get_run(engine, run_id).stage)

    @property
    def run(self) -> RunRecord:
        return self.ready.run

    def explain(self, files: list[bytes]) -> list[Explanation]:
        run = self.ready
        explained: list[Explanation | None] = [None] * len(files)
        loaded = {}
        for i, data in enumerate(files):
            try:
                loaded[i] = run.spec.load(data)
            except BonedbError as exc:
                explained[i] = Explanation(None, None, None, str(exc))
        order = sorted(loaded)
        drawn = explained_overlays(run.explainer, run.spec, [loaded[i][0] for i in order],
                                   [loaded[i][1] for i in order], batch_size=BATCH)
        for i, (output, picture) in zip(order, drawn):
            if run.run.stage == BODYPART:
                outcome, p = run.class_names[int(np.argmax(output))], float(np.max(output))
            else:
                p = float(output[0])
                outcome = "abnormal" if p > THRESHOLD else "normal"
            explained[i] = Explanation(outcome, p, picture)
        return explained  # type: ignore[return-value]
