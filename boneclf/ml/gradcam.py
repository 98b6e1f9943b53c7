"""Grad-CAM on Keras 3 models whose backbone is nested, for every architecture in the registry.

The classifier is split where Grad-CAM needs it: the layers before the backbone (preprocessing;
augmentation is skipped, it is off at inference anyway), the backbone up to the registry's
layer *and* to its own output in one call, then pooling and head. The heatmap is the positive
part of sum over channels of gradient x activation, taken at each position ("gradxact"), then
upsampled to the image.

Why not classic Grad-CAM ("gradcam": the gradient averaged over space weights each channel)? The
custom CNN pools with global MAX, so the score depends only on each channel's strongest position;
averaging spreads that credit over every position the channel fires at, bones cut off by the
frame included. Per-position weighting credits only what reaches the score. Measured on planted
breaks (tests/test_gradcam.py on the test fixture's model; benchmarks/gradcam_benchmark.py on the
demo's), with the layer one block earlier (`relu3`, 16 x 16 at 64 px, instead of `last_conv`,
8 x 8): pointing game 0.56 -> 1.00, share of heat in the outer frame 0.10 -> 0.04. For a backbone
read at its output and followed by global average pooling the gradient is the same at every
position and both methods give the same map.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from boneclf.results import Result

from .backbones import get_backbone
from .tf_env import keras as _keras
from .tf_env import tensorflow

METHODS = ("gradxact", "gradcam")
# The pointing game's radius and the border frame, as fractions of the picture's side.
POINTING_RADIUS = 0.10
BORDER_FRAME = 0.10
BATCH = 32  # images per Grad-CAM call: one backward pass each, memory bounded


class GradCam:
    def __init__(self, model, arch: str, *, layer: str | None = None, method: str = "gradxact"):
        if method not in METHODS:
            raise ValueError(f"method {method!r}: choose from {', '.join(METHODS)}")
        keras = _keras()
        self.model = model
        self.method = method
        base = model.get_layer("backbone")
        self.layer = layer or get_backbone(arch).gradcam_layer
        target = base.get_layer(self.layer)
        self.features = keras.Model(base.inputs, [target.output, base.output], name="gradcam_features")
        names = [layer.name for layer in model.layers]
        at = names.index("backbone")
        self.before = [layer for layer in model.layers[1:at] if not layer.name.startswith("aug_")]
        self.after = model.layers[at + 1:]
        # Compiled once per batch shape and class: eager execution of a 400-layer backbone costs
        # more in Python overhead than in arithmetic.
        self._compiled: dict[int | None, Any] = {}

    def __call__(self, images: np.ndarray, class_index: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(heatmaps in [0, 1] at the input size, model outputs) for a batch of RGB 0..255 images.

        class_index None explains the predicted class; for a single sigmoid output, class 1 is
        "abnormal" and class 0 "normal" (the score is then the negated logit).
        """
        tf = tensorflow()
        if class_index not in self._compiled:
            self._compiled[class_index] = tf.function(lambda x: self._cam(x, class_index), reduce_retracing=True)
        cam, outputs = self._compiled[class_index](tf.convert_to_tensor(images, tf.float32))
        return cam.numpy(), outputs.numpy()

    def activation_gradients(self, images: np.ndarray, class_index: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """(activation at the layer, gradient of the class score with respect to it), for checking a layer."""
        tf = tensorflow()
        activation, grads, _ = self._forward(tf.convert_to_tensor(images, tf.float32), class_index)
        return activation.numpy(), grads.numpy()

    def _cam(self, x, class_index):
        tf = tensorflow()
        activation, grads, outputs = self._forward(x, class_index)
        if self.method == "gradcam":
            grads = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
        cam = tf.nn.relu(tf.reduce_sum(tf.cast(grads * activation, tf.float32), axis=-1))
        cam = cam / (tf.reduce_max(cam, axis=(1, 2), keepdims=True) + 1e-8)
        cam = tf.image.resize(cam[..., None], tf.shape(x)[1:3], method="bilinear")[..., 0]
        return cam, outputs

    def _forward(self, x, class_index):
        tf = tensorflow()
        with tf.GradientTape() as tape:
            h = x
            for layer in self.before:
                h = layer(h)
            activation, h = self.features(h, training=False)
            for layer in self.after:
                if layer.name == "head":
                    # Score the logits, not the probabilities: a confident sigmoid or softmax
                    # saturates and its gradient vanishes into noise.
                    logits = tf.matmul(tf.cast(h, tf.float32), layer.kernel) + layer.bias
                    h = layer.activation(logits)
                else:
                    h = layer(h, training=False)
            outputs = h
            score = self._score(logits, outputs, class_index)
        return activation, tape.gradient(score, activation), outputs

    @staticmethod
    def _score(logits, outputs, class_index):
        tf = tensorflow()
        if outputs.shape[-1] == 1:
            z = logits[:, 0]
            if class_index is None:
                return tf.reduce_sum(tf.where(outputs[:, 0] > 0.5, z, -z))
            return tf.reduce_sum(z if class_index == 1 else -z)
        chosen = tf.argmax(outputs, axis=-1) if class_index is None else tf.fill([tf.shape(outputs)[0]], class_index)
        return tf.reduce_sum(tf.gather(logits, chosen, axis=1, batch_dims=1))


# -- The heatmap over the picture, not over the model input ---------------------------------------
def mask_padding(heatmap: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """The model-input heatmap with everything outside the picture's box (the padding of a pad=True
    spec) set to 0, peak renormalised to 1: heat on padding explains nothing."""
    top, left, height, width = box
    masked = np.zeros_like(heatmap)
    masked[top:top + height, left:left + width] = heatmap[top:top + height, left:left + width]
    peak = masked.max()
    return masked / peak if peak > 0 else masked


def on_picture(heatmap: np.ndarray, spec, shape: tuple[int, int]) -> np.ndarray:
    """The heatmap cropped to the picture inside the model input (shape: the full picture's (H, W)),
    so that `overlay` stretches it over the picture and nothing else."""
    top, left, height, width = spec.content_box(*shape)
    return mask_padding(heatmap, (top, left, height, width))[top:top + height, left:left + width]


def explained_overlays(explainer: GradCam, spec, pictures: Sequence[np.ndarray], inputs: Sequence[np.ndarray], *,
                       class_index: int | None = None,
                       batch_size: int = BATCH) -> Iterator[tuple[np.ndarray, Image.Image]]:
    """(model output, overlay) for each picture, in order: Grad-CAM over the model INPUTS in batches, each
    heatmap cut to its full-size picture (padding away, see `on_picture`) and laid over it in colour.

    PICTURES are the full-size grayscale pictures (H, W) the inputs were made from, one per input."""
    for start in range(0, len(inputs), batch_size):
        heatmaps, outputs = explainer(np.stack(inputs[start:start + batch_size]), class_index=class_index)
        for k, picture in enumerate(pictures[start:start + batch_size]):
            heat = on_picture(heatmaps[k], spec, picture.shape)
            yield outputs[k], overlay(Image.fromarray(picture), heat)


def overlay(image: Image.Image, heatmap: np.ndarray, alpha: float = 0.45) -> Image.Image:
    """The X-ray in gray with the heatmap in a jet-like colour map on top, at the X-ray's size."""
    gray = image.convert("L")
    heat = np.asarray(Image.fromarray((np.clip(heatmap, 0, 1) * 255).astype(np.uint8)).resize(gray.size,
                                                                                            Image.Resampling.BILINEAR))
    colours = _jet(heat.astype(np.float32) / 255.0)
    base = np.repeat(np.asarray(gray, np.float32)[..., None], 3, axis=2)
    # Weight the colour by the heat itself so cold regions keep the plain X-ray.
    weight = alpha * (heat.astype(np.float32) / 255.0)[..., None]
    blended = base * (1 - weight) + colours * 255.0 * weight
    return Image.fromarray(np.clip(blended, 0, 255).astype(np.uint8), "RGB")


def _jet(v: np.ndarray) -> np.ndarray:
    r = np.clip(1.5 - np.abs(4 * v - 3), 0, 1)
    g = np.clip(1.5 - np.abs(4 * v - 2), 0, 1)
    b = np.clip(1.5 - np.abs(4 * v - 1), 0, 1)
    return np.stack([r, g, b], axis=-1)


# -- How well heatmaps point at a known finding ---------------------------------------------------
def pointing_hits(heatmaps: np.ndarray, points: np.ndarray, radius: float) -> np.ndarray:
    """Whether each heatmap's peak (its pixel's centre) lies within `radius` pixels of its point (x, y)."""
    n = len(heatmaps)
    if n == 0:
        return np.zeros(0, bool)
    peak = heatmaps.reshape(n, -1).argmax(axis=1)
    py, px = np.unravel_index(peak, heatmaps.shape[1:])
    return np.hypot(px + 0.5 - points[:, 0], py + 0.5 - points[:, 1]) <= radius


def border_mass(heatmaps: np.ndarray, boxes, frame: float = BORDER_FRAME) -> np.ndarray:
    """Each heatmap's share of its mass in the outer `frame` of its picture's box (top, left, height,
    width): on a bone that leaves the frame, heat there is rarely the finding."""
    shares = []
    for heatmap, (top, left, height, width) in zip(heatmaps, boxes):
        picture = heatmap[top:top + height, left:left + width]
        dy, dx = round(frame * height), round(frame * width)
        total = picture.sum()
        inner = picture[dy:height - dy, dx:width - dx].sum()
        shares.append(float((total - inner) / total) if total > 0 else 0.0)
    return np.asarray(shares)


@dataclass
class Localization(Result):
    """Grad-CAM on images with a known finding, scored on the true positives (abnormal, predicted so).

    Border figures count only the true positives whose finding lies away from the border (farther than
    the frame plus the pointing radius from every edge): heat in the frame can then not be the finding.
    """

    layer: str
    method: str
    images: int
    true_positives: int
    pointing_game: float  # share of peaks within POINTING_RADIUS of the side from the finding
    away_from_border: int  # true positives whose finding lies away from the border
    border_mass: float  # their mean share of heat in the outer BORDER_FRAME of the picture
    peaks_on_border: float  # their share of peaks in that frame
    border_mass_all: float  # the mean share over every true positive, findings near the border included


def localization(explainer: GradCam, spec, files: list[bytes], findings: list[tuple[float, float]],
                 batch_size: int = 64) -> Localization:
    """Score `explainer` on abnormal images (encoded FILES) whose finding's centre is known (in the
    pictures' own pixels): the pointing game and the border mass, padding masked as reports show it."""
    maps, boxes, points, detected, away = [], [], [], [], []
    margin = BORDER_FRAME + POINTING_RADIUS
    for start in range(0, len(files), batch_size):
        loaded = [spec.load(data) for data in files[start:start + batch_size]]
        heatmaps, outputs = explainer(np.stack([model_input for _, model_input in loaded]), class_index=1)
        for k, (picture, _) in enumerate(loaded):
            height, width = picture.shape
            box = spec.content_box(height, width)
            x, y = findings[start + k]
            maps.append(mask_padding(heatmaps[k], box))
            boxes.append(box)
            points.append((box[1] + x * box[3] / width, box[0] + y * box[2] / height))
            detected.append(float(outputs[k][0]) > 0.5)
            away.append(margin <= x / width <= 1 - margin and margin <= y / height <= 1 - margin)
    tp = np.asarray(detected, bool)
    far = tp & np.asarray(away, bool)
    maps_all = np.asarray(maps) if maps else np.zeros((0, spec.size, spec.size))
    points_all = np.asarray(points, float).reshape(-1, 2)
    hits = pointing_hits(maps_all[tp], points_all[tp], POINTING_RADIUS * spec.size)
    border = border_mass(maps_all, boxes)
    peaks = np.asarray([_peak_on_border(m, b) for m, b in zip(maps_all, boxes)], bool)
    return Localization(explainer.layer, explainer.method, len(files), int(tp.sum()), _mean(hits), int(far.sum()),
                        _mean(border[far]), _mean(peaks[far]), _mean(border[tp]))


def _mean(values: np.ndarray) -> float:
    return float(np.mean(values)) if len(values) else float("nan")


def _peak_on_border(heatmap: np.ndarray, box, frame: float = BORDER_FRAME) -> bool:
    top, left, height, width = box
    y, x = np.unravel_index(heatmap.argmax(), heatmap.shape)
    y, x = y - top, x - left
    dy, dx = round(frame * height), round(frame * width)
    return not (dy <= y < height - dy and dx <= x < width - dx)
