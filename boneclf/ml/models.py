"""Classifier models: augmentation, the backbone's preprocessing, the backbone, a small head.

Built functionally with named layers, the backbone nested as a model named "backbone", so
Grad-CAM can reach its last convolutional activation and phase 1 can swap the head's weights in.
"""

from __future__ import annotations

from boneclf.errors import BonedbError

from .backbones import Backbone, build_backbone, preprocessing_layers
from .tf_env import keras as _keras

AUGMENTATIONS = ("paper", "flip", "none")


def augmentation(kind: str):
    """The paper's augmentation (rotation, shift, zoom, horizontal flip) as layers: active only in training."""
    keras = _keras()
    layers = keras.layers
    if kind == "none":
        return []
    steps = [layers.RandomFlip("horizontal", name="aug_flip")]
    if kind == "paper":
        steps += [
            layers.RandomRotation(0.05, fill_mode="constant", name="aug_rotate"),  # about +-18 degrees
            layers.RandomTranslation(0.1, 0.1, fill_mode="constant", name="aug_shift"),
            layers.RandomZoom(0.1, fill_mode="constant", name="aug_zoom"),
        ]
    elif kind != "flip":
        raise BonedbError(f"--augment {kind!r}: choose from {', '.join(AUGMENTATIONS)}")
    return steps


def head_layers(outputs: int, dropout: float):
    """Pooling, dropout and the output layer; float32 output so mixed precision stays stable."""
    keras = _keras()
    layers = keras.layers
    activation = "sigmoid" if outputs == 1 else "softmax"
    return [
        layers.Dropout(dropout, name="head_dropout"),
        layers.Dense(outputs, activation=activation, dtype="float32", name="head"),
    ]


def pooling(backbone: Backbone):
    """Global max pooling for the from-scratch CNN (a break is small: averaging would dilute it),
    global average pooling for ImageNet backbones, as they were trained."""
    keras = _keras()
    if backbone.name == "cnn":
        return keras.layers.GlobalMaxPooling2D(name="pool")
    return keras.layers.GlobalAveragePooling2D(name="pool")


def build_classifier(backbone: Backbone, image_size: int, outputs: int, *, weights: str | None,
                     augment: str = "paper", dropout: float = 0.3):
    """The full model: inputs are RGB images with values 0..255."""
    keras = _keras()
    inputs = keras.Input((image_size, image_size, 3), name="image")
    x = inputs
    for layer in augmentation(augment) + preprocessing_layers(backbone):
        x = layer(x)
    base = build_backbone(backbone, image_size, weights)
    # training=False keeps BatchNorm in inference mode even once layers are unfrozen (Keras
    # transfer-learning guide); the from-scratch CNN must update its statistics, so it is called plainly.
    x = base(x) if backbone.name == "cnn" else base(x, training=False)
    x = pooling(backbone)(x)
    for layer in head_layers(outputs, dropout):
        x = layer(x)
    return keras.Model(inputs, x, name=f"bonedb_{backbone.name}")


def feature_extractor(model):
    """image -> pooled backbone features, sharing the classifier's layers (no augmentation)."""
    keras = _keras()
    inputs = keras.Input(model.input_shape[1:])
    x = inputs
    for layer in model.layers[1:]:
        if layer.name.startswith("aug_"):
            continue
        x = layer(x, training=False) if layer.name == "backbone" else layer(x)
        if layer.name == "pool":
            break
    return keras.Model(inputs, x, name="features")


def head_model(model):
    """pooled features -> output, sharing the classifier's head layers."""
    keras = _keras()
    features = model.get_layer("pool").output.shape[-1]
    inputs = keras.Input((features,))
    x = model.get_layer("head_dropout")(inputs)
    x = model.get_layer("head")(x)
    return keras.Model(inputs, x, name="head_only")


def unfreeze_top(model, fraction: float) -> int:
    """Make the top `fraction` of the backbone's layers trainable, BatchNorm excepted; returns how many."""
    keras = _keras()
    base = model.get_layer("backbone")
    base.trainable = True
    cut = int(len(base.layers) * (1 - fraction))
    count = 0
    for index, layer in enumerate(base.layers):
        trainable = index >= cut and not isinstance(layer, keras.layers.BatchNormalization)
        layer.trainable = trainable
        count += trainable
    return count
