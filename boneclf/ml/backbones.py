"""The backbone registry: one entry per architecture, with everything that differs between them.

Each entry names its Keras constructor, its own `preprocess_input`, the equivalent preprocessing
as serialisable Keras layers (so a saved model carries it), its default image size, the layer
Grad-CAM reads, and the weights file Keras downloads for it. Adding an architecture is adding
one entry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from boneclf.errors import BonedbError
from boneclf.vocabulary import BODYPART, FRACTURE

from .tf_env import keras as _keras

KERAS_WEIGHTS_BASE = "https://storage.googleapis.com/tensorflow/keras-applications/"

# preprocess modes of keras.applications: scaling to [-1, 1] ("tf"), ImageNet mean/std on [0, 1]
# ("torch"), ImageNet BGR means subtracted ("caffe"), or none (the model rescales itself).
_TORCH_MEAN, _TORCH_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


@dataclass(frozen=True)
class Backbone:
    name: str
    constructor: str  # attribute of keras.applications, or "" for the custom CNN
    preprocess_module: str  # keras.applications.<module>.preprocess_input
    mode: str  # tf | torch | caffe | none
    default_size: int
    gradcam_layer: str
    min_size: int = 32
    weights_file: str | Callable[[int], str] = ""
    weights_url: str = ""

    def weights_filename(self, image_size: int) -> str:
        return self.weights_file(image_size) if callable(self.weights_file) else self.weights_file

    def preprocess_input(self):
        """Keras' own preprocess_input for this architecture (the reference the layers match)."""
        if not self.preprocess_module:
            return lambda x: x / 255.0
        keras = _keras()
        return getattr(keras.applications, self.preprocess_module).preprocess_input


def _mobilenet_weights(size: int) -> str:
    rows = size if size in (96, 128, 160, 192, 224) else 224
    return f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_{rows}_no_top.h5"


REGISTRY: dict[str, Backbone] = {
    b.name: b
    for b in (
        # relu3, not last_conv: twice the resolution, and its gradient spreads around the pooled maximum.
        Backbone("cnn", "", "", "unit", 128, "relu3", min_size=16),
        # block5_pool, the output: block5_conv3 feeds a 2x2 max-pool whose gradient reaches one pixel in four.
        Backbone("vgg16", "VGG16", "vgg16", "caffe", 224, "block5_pool",
                 weights_file="vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
                 weights_url=KERAS_WEIGHTS_BASE + "vgg16/"),
        Backbone("resnet50", "ResNet50", "resnet", "caffe", 224, "conv5_block3_out",
                 weights_file="resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
                 weights_url=KERAS_WEIGHTS_BASE + "resnet/"),
        Backbone("densenet121", "DenseNet121", "densenet", "torch", 224, "relu",
                 weights_file="densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5",
                 weights_url=KERAS_WEIGHTS_BASE + "densenet/"),
        Backbone("densenet169", "DenseNet169", "densenet", "torch", 224, "relu",
                 weights_file="densenet169_weights_tf_dim_ordering_tf_kernels_notop.h5",
                 weights_url=KERAS_WEIGHTS_BASE + "densenet/"),
        Backbone("mobilenetv2", "MobileNetV2", "mobilenet_v2", "tf", 224, "out_relu",
                 weights_file=_mobilenet_weights, weights_url=KERAS_WEIGHTS_BASE + "mobilenet_v2/"),
        Backbone("efficientnetb0", "EfficientNetB0", "efficientnet", "none", 224, "top_activation",
                 weights_file="efficientnetb0_notop.h5",
                 weights_url="https://storage.googleapis.com/keras-applications/"),
    )
}

# The paper's choices: MobileNetV2 for the body part (its conclusion), DenseNet121 for fractures.
STAGE_DEFAULTS = {BODYPART: "mobilenetv2", FRACTURE: "densenet121"}



def get_backbone(name: str) -> Backbone:
    try:
        return REGISTRY[name]
    except KeyError:
        raise BonedbError(f"unknown architecture {name!r}: choose from {', '.join(REGISTRY)}") from None


def preprocessing_layers(backbone: Backbone) -> list:
    """Layers doing what backbone.preprocess_input does, on RGB inputs in [0, 255]."""
    keras = _keras()
    layers = keras.layers
    if backbone.mode == "tf":
        return [layers.Rescaling(1 / 127.5, offset=-1.0, name="preprocess")]
    if backbone.mode == "torch":
        return [layers.Rescaling(1 / 255.0, name="preprocess_scale"),
                layers.Normalization(mean=_TORCH_MEAN, variance=[s * s for s in _TORCH_STD], name="preprocess")]
    if backbone.mode == "caffe":
        # caffe mode flips RGB to BGR, then subtracts the BGR means. Flip first so that colour
        # inputs are right too (for grayscale X-rays the channels are equal and the flip is moot).
        from .layers import ChannelFlip

        return [ChannelFlip(name="rgb_to_bgr"),
                layers.Normalization(mean=_CAFFE_MEAN_BGR, variance=[1.0, 1.0, 1.0], name="preprocess")]
    if backbone.mode == "unit":
        return [layers.Rescaling(1 / 255.0, name="preprocess")]
    return []  # "none": EfficientNet rescales inside the model


def build_backbone(backbone: Backbone, image_size: int, weights: str | None):
    """The feature extractor (no top) as a nested Keras model named "backbone"."""
    keras = _keras()
    if image_size < backbone.min_size:
        raise BonedbError(f"--image-size {image_size} is too small for {backbone.name}: "
                          f"use {backbone.min_size} or more")
    shape = (image_size, image_size, 3)
    if backbone.name == "cnn":
        return _custom_cnn(keras, shape)
    constructor = getattr(keras.applications, backbone.constructor)
    model = constructor(include_top=False, weights=weights, input_shape=shape)
    model.name = "backbone"
    return model


def _custom_cnn(keras, shape):
    """The paper's custom CNN: 3x3 convolutions with max-pooling; dropout and a dense layer follow in the head."""
    layers = keras.layers
    inputs = keras.Input(shape)
    x = inputs
    for index, filters in enumerate((32, 64, 128)):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"conv{index + 1}")(x)
        # Batch normalisation is the one addition to the paper's design: it trains from scratch reliably.
        x = layers.BatchNormalization(momentum=0.9, name=f"bn{index + 1}")(x)
        x = layers.Activation("relu", name=f"relu{index + 1}")(x)
        x = layers.MaxPooling2D(name=f"pool{index + 1}")(x)
    x = layers.Conv2D(128, 3, padding="same", activation="relu", name="last_conv")(x)
    return keras.Model(inputs, x, name="backbone")
