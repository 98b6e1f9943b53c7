"""How a file becomes a model input, in one place, for training, evaluation, prediction and Grad-CAM.

A run records its ImageSpec; every path that feeds its model goes through `decode` (file bytes
to a cached uint8 picture) and `model_input` (that picture to the float RGB tensor the model
takes), so a run trained with Canny edges or padding is scored and explained on exactly what it
was trained on. The backbone's normalization (its `preprocess_input`) lives inside the model as
layers; the spec names it so a run's record says what the model expects.
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass

import numpy as np

from boneclf.data.formats import TRAINABLE_FORMATS
from boneclf.data.pixels import UnknownFormat, check_pixels, max_pixels
from boneclf.errors import BonedbError

from .tf_env import tensorflow

READABLE = ("PNG", "JPEG", "GIF", "BMP")  # what `decode_full` reads, by the bytes


@dataclass(frozen=True)
class ImageSpec:
    size: int  # square input side in pixels
    pad: bool = False  # keep the aspect ratio, padding with black, instead of stretching
    canny: bool = False  # Canny edge maps instead of the picture (the seed paper tried this)
    channels: int = 3  # the grayscale picture repeated, as ImageNet backbones expect
    normalization: str = "unit"  # the backbone's preprocess mode, applied by the model's own layers

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ImageSpec:
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise BonedbError(f"image spec has unknown fields {sorted(unknown)}: made by a newer bonedb?")
        return cls(**data)

    # -- TensorFlow ops, usable inside tf.data graphs and eagerly -----------------------------------
    def decode(self, data):
        """Encoded file bytes (a string tensor) -> (size, size, 1) uint8: what the pipeline caches."""
        return self.resize(decode_full(data))

    def resize(self, image):
        """A full-size (H, W, 1) uint8 picture -> (size, size, 1) uint8, Canny applied if asked for."""
        tf = tensorflow()
        if self.pad:
            image = tf.image.resize_with_pad(image, self.size, self.size, antialias=True)
        else:
            image = tf.image.resize(image, (self.size, self.size), antialias=True)
        image = tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)
        if self.canny:
            from .edges import canny_tf

            image = canny_tf(image)
        return image

    def model_input(self, image):
        """(..., size, size, 1) uint8 -> (..., size, size, channels) float32 in 0..255."""
        tf = tensorflow()
        image = tf.cast(image, tf.float32)
        return tf.repeat(image, self.channels, axis=-1) if self.channels != 1 else image

    def content_box(self, height: int, width: int) -> tuple[int, int, int, int]:
        """(top, left, height, width) of a height x width picture inside the model input: all of it,
        unless pad=True shrank it and padded around (the arithmetic of tf.image.resize_with_pad, in float32)."""
        if not self.pad:
            return 0, 0, self.size, self.size
        h, w, side = np.float32(height), np.float32(width), np.float32(self.size)
        ratio = max(w / side, h / side)
        new_h, new_w = h / ratio, w / ratio
        top, left = max(0, int(np.floor((side - new_h) / 2))), max(0, int(np.floor((side - new_w) / 2)))
        return top, left, int(np.floor(new_h)), int(np.floor(new_w))

    # -- Eager helpers for single files (prediction, Grad-CAM) ---------------------------------------
    def load(self, data: bytes) -> tuple[np.ndarray, np.ndarray]:
        """(full-size grayscale uint8 picture (H, W), model input (size, size, channels) float32) from file
        bytes, through the very ops the training pipeline runs. Raises BonedbError for undecodable bytes, and
        for an image over the pixel limit before TensorFlow sees it (its decoder has no limit)."""
        screen(data)
        tf = tensorflow()
        try:
            full = decode_full(tf.constant(data))
            resized = self.resize(full)
        except (tf.errors.InvalidArgumentError, tf.errors.UnknownError):
            # TensorFlow's message names its own graph nodes; say what is wrong with the file instead.
            raise BonedbError(f"not a readable image: {why_unreadable(data)}") from None
        return full.numpy()[..., 0], self.model_input(resized).numpy()


def screen(data: bytes) -> None:
    """The checks `ImageSpec.load` makes before TensorFlow sees the bytes, from their header alone (no decode,
    no TensorFlow): BonedbError for an image over the pixel limit, or bytes of no format whose size can be read."""
    try:
        check_pixels(data)
    except UnknownFormat:  # no size to check: nothing may decode it unbounded; Pillow says what it is
        raise BonedbError(f"not a readable image: {why_unreadable(data)}") from None


def why_unreadable(data: bytes) -> str:
    """What is wrong with bytes TensorFlow could not decode, in a few words, from what Pillow finds in them."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        return "the file is empty"
    found = "image"
    try:
        with Image.open(io.BytesIO(data)) as picture:
            found = picture.format or "unknown"
            picture.load()
    except UnidentifiedImageError:
        return f"its content is not {', '.join(READABLE[:-1])} or {READABLE[-1]}"
    except (OSError, SyntaxError, ValueError):
        return f"a damaged or truncated {found} file"
    if found not in TRAINABLE_FORMATS:
        return f"{found} content, which bonedb does not read: convert it to PNG or JPEG"
    return f"a {found} file TensorFlow cannot decode: convert it to PNG"


def decode_full(data):
    """Encoded bytes (PNG, JPEG, GIF's first frame, BMP) -> (H, W, 1) uint8 at full size.

    The format comes from the bytes, not the file name. TensorFlow decodes GIF only to 3 channels
    (asking it for 1 fails, and the pipeline would drop the file), so a GIF is decoded in colour
    and made gray; every other format keeps the single-channel decode it always had. An image over the
    pixel limit (`boneclf.data.pixels`, read from its header) fails before any decode, as a corrupt file
    does: the pipeline drops it."""
    tf = tensorflow()
    with tf.control_dependencies([_within_pixel_limit(data)]):
        data = tf.identity(data)
    is_gif = tf.equal(tf.strings.substr(data, 0, 3), "GIF")
    image = tf.cond(
        is_gif,
        lambda: tf.image.rgb_to_grayscale(tf.io.decode_image(data, channels=3, expand_animations=False)),
        lambda: tf.io.decode_image(data, channels=1, expand_animations=False),
    )
    image.set_shape([None, None, 1])
    return image


def _within_pixel_limit(data):
    """An op that fails (InvalidArgumentError) when the header of DATA claims more pixels than the limit."""
    tf = tensorflow()
    pixels = tf.numpy_function(_header_pixels, [data], tf.int64, stateful=False)
    return tf.debugging.assert_less_equal(pixels, tf.constant(max_pixels(), tf.int64),
                                          message="over bonedb's pixel limit (BONEDB_MAX_PIXELS), or no "
                                                  "header whose size bonedb can read")


def _header_pixels(data) -> np.int64:
    if isinstance(data, np.ndarray):  # eagerly, a 0-d array of Python bytes; in a tf.data graph, bytes
        data = data.item()
    try:
        return np.int64(check_pixels(data).pixels)
    except BonedbError:  # over the limit, or no header known: refused all the same
        return np.int64(np.iinfo(np.int64).max)


def spec_for(arch: str, size: int, *, pad: bool = False, canny: bool = False) -> ImageSpec:
    from .backbones import get_backbone

    return ImageSpec(size=size, pad=pad, canny=canny, channels=3, normalization=get_backbone(arch).mode)
