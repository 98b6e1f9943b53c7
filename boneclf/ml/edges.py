"""Canny edge detection in TensorFlow ops, so it runs inside the tf.data graph (the seed paper tried
training on edge maps). Smoothing, Sobel gradients, non-maximum suppression along the gradient
direction, a double threshold relative to the image's strongest edge, and hysteresis by repeated
dilation of strong edges into connected weak ones.
"""

from __future__ import annotations

import numpy as np

from .tf_env import tensorflow

LOW, HIGH = 0.1, 0.3  # thresholds as fractions of the strongest gradient in the image
HYSTERESIS_STEPS = 8


def _gaussian_kernel(size: int = 5, sigma: float = 1.4) -> np.ndarray:
    axis = np.arange(size) - size // 2
    kernel = np.exp(-(axis[:, None] ** 2 + axis[None, :] ** 2) / (2 * sigma**2))
    return (kernel / kernel.sum()).astype(np.float32)[:, :, None, None]


def canny_tf(image):
    """(H, W, 1) uint8 -> (H, W, 1) uint8 edge map (0 or 255)."""
    tf = tensorflow()
    x = tf.cast(image, tf.float32)[None]
    x = tf.nn.conv2d(x, _gaussian_kernel(), strides=1, padding="SAME")
    sobel = tf.image.sobel_edges(x)  # (1, H, W, 1, 2): dy, dx
    gy, gx = sobel[..., 0][..., 0], sobel[..., 1][..., 0]
    magnitude = tf.sqrt(gx * gx + gy * gy)
    # Gradient direction folded into four bins: 0, 45, 90, 135 degrees.
    angle = tf.math.atan2(gy, gx) * (180.0 / np.pi)
    angle = tf.math.floormod(angle + 180.0, 180.0)
    direction = tf.cast(tf.math.floormod(tf.round(angle / 45.0), 4.0), tf.int32)

    padded = tf.pad(magnitude, [[0, 0], [1, 1], [1, 1]])
    height, width = tf.shape(magnitude)[1], tf.shape(magnitude)[2]

    def shifted(dy, dx):
        return padded[:, 1 + dy:1 + dy + height, 1 + dx:1 + dx + width]

    neighbours = [(shifted(0, 1), shifted(0, -1)), (shifted(1, 1), shifted(-1, -1)),
                  (shifted(1, 0), shifted(-1, 0)), (shifted(1, -1), shifted(-1, 1))]
    is_max = tf.zeros_like(magnitude, dtype=tf.bool)
    for bin_index, (a, b) in enumerate(neighbours):
        is_max = tf.logical_or(is_max, tf.logical_and(tf.equal(direction, bin_index),
                                                      tf.logical_and(magnitude >= a, magnitude >= b)))
    thin = tf.where(is_max, magnitude, 0.0)
    peak = tf.reduce_max(thin) + 1e-6
    strong = tf.cast(thin >= HIGH * peak, tf.float32)[..., None]
    weak = tf.cast(thin >= LOW * peak, tf.float32)[..., None]
    edges = strong
    for _ in range(HYSTERESIS_STEPS):
        edges = tf.nn.max_pool2d(edges, 3, 1, "SAME") * weak
    return tf.cast(edges[0] * 255.0, tf.uint8)
