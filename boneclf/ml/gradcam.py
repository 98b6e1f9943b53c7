"""Grad-CAM on Keras 3 models whose backbone is nested, for every architecture in the registry.

The classifier is split where Grad-CAM needs it: the layers before the backbone (preprocessing;
augmentation is skipped, it is off at inference anyway), the backbone up to the registry's
layer *and* to its own output in one call, then pooling and head. The gradient of the chosen
class score with respect to that layer's activation, averaged over space, weights the activation
channels; their positive sum, upsampled to the image, is the heatmap.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from .backbones import get_backbone
from .tf_env import keras as _keras
from .tf_env import tensorflow


class GradCam:
    def __init__(self, model, arch: str):
        keras = _keras()
        self.model = model
        base = model.get_layer("backbone")
        layer = base.get_layer(get_backbone(arch).gradcam_layer)
        self.features = keras.Model(base.inputs, [layer.output, base.output], name="gradcam_features")
        names = [layer.name for layer in model.layers]
        at = names.index("backbone")
        self.before = [layer for layer in model.layers[1:at] if not layer.name.startswith("aug_")]
        self.after = model.layers[at + 1:]
        # Compiled once per batch shape and class: eager execution of a 400-layer backbone costs
        # more in Python overhead than in arithmetic.
        self._compiled = {}

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

    def _cam(self, x, class_index):
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
        grads = tape.gradient(score, activation)
        weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
        cam = tf.nn.relu(tf.reduce_sum(weights * activation, axis=-1))
        cam = cam / (tf.reduce_max(cam, axis=(1, 2), keepdims=True) + 1e-8)
        cam = tf.image.resize(cam[..., None], tf.shape(x)[1:3], method="bilinear")[..., 0]
        return cam, outputs

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


def overlay(image: Image.Image, heatmap: np.ndarray, alpha: float = 0.45) -> Image.Image:
    """The X-ray in gray with the heatmap in a jet-like colour map on top, at the X-ray's size."""
    gray = image.convert("L")
    heat = np.asarray(Image.fromarray((np.clip(heatmap, 0, 1) * 255).astype(np.uint8)).resize(gray.size,
                                                                                            Image.BILINEAR))
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
