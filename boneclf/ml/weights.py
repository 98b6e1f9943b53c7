"""Pretrained weights offline: put a downloaded Keras weights file where Keras looks for it."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from boneclf.errors import BonedbError

from .backbones import Backbone, build_backbone, get_backbone
from .tf_env import keras as _keras

# Keras names MobileNetV2's files after the input size they were trained at (96 to 224 px).
_SIZED_FILE = re.compile(r"_(?P<size>\d+)_no_top\.h5$")


def keras_models_dir() -> Path:
    """Where keras.utils.get_file caches downloads: $KERAS_HOME/models, else ~/.keras/models."""
    from keras.src.backend import config

    return Path(config.keras_home()).expanduser() / "models"


def sized_weights(backbone: Backbone) -> bool:
    """Whether the architecture's ImageNet weights file depends on the input size."""
    return callable(backbone.weights_file)


def import_command(backbone: Backbone, image_size: int) -> str:
    """The `bonedb weights import` line that makes `--weights imagenet` work offline at this size."""
    command = f"bonedb weights import {backbone.weights_filename(image_size)} --arch {backbone.name}"
    return command + (f" --image-size {image_size}" if sized_weights(backbone) else "")


def import_weights(file: Path, arch: str, image_size: int | None = None) -> Path:
    """Check FILE fits ARCH (by loading it) and, for size-dependent files, that it is the file for the
    input size, then copy it under the name Keras' download uses."""
    _keras()
    backbone = get_backbone(arch)
    if backbone.name == "cnn":
        raise BonedbError("the custom cnn has no pretrained weights: train it with --weights none")
    file = Path(file)
    if not file.is_file():
        raise BonedbError(f"{file}: no such file")
    size = _checked_size(file, backbone, image_size) if sized_weights(backbone) else backbone.default_size
    try:
        build_backbone(backbone, size, str(file))
    except Exception as exc:
        raise BonedbError(f"{file} does not fit {arch} ({str(exc).splitlines()[0][:200]}): "
                          f"expected Keras' no-top file {backbone.weights_filename(size)}") from exc
    target = keras_models_dir() / backbone.weights_filename(size)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(file, target)
    return target


def _checked_size(file: Path, backbone: Backbone, image_size: int | None) -> int:
    """The input size a size-dependent weights file is imported for; its Keras name must agree."""
    named = _SIZED_FILE.search(file.name)
    if image_size is None:
        if named is None:
            raise BonedbError(f"{file.name}: {backbone.name}'s weights depend on the input size and this file's name "
                              "does not say which: pass --image-size, the size you train at")
        return int(named["size"])
    expected = backbone.weights_filename(image_size)
    if named is not None and file.name != expected:
        raise BonedbError(f"{file.name} holds {backbone.name} weights for {named['size']} px, but --image-size "
                          f"{image_size} needs {expected}: download that file, or import this one with "
                          f"--image-size {named['size']} and train at that size")
    return image_size
