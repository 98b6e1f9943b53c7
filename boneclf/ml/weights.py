"""Pretrained weights offline: put a downloaded Keras weights file where Keras looks for it."""

from __future__ import annotations

import shutil
from pathlib import Path

from boneclf.errors import BonedbError

from .backbones import build_backbone, get_backbone
from .tf_env import keras as _keras


def keras_models_dir() -> Path:
    """Where keras.utils.get_file caches downloads: $KERAS_HOME/models, else ~/.keras/models."""
    from keras.src.backend import config

    return Path(config.keras_home()).expanduser() / "models"


def import_weights(file: Path, arch: str, image_size: int | None = None) -> Path:
    """Check FILE fits ARCH (by loading it), then copy it under the name Keras' download uses."""
    _keras()
    backbone = get_backbone(arch)
    if backbone.name == "cnn":
        raise BonedbError("the custom cnn has no pretrained weights: train it with --weights none")
    file = Path(file)
    if not file.is_file():
        raise BonedbError(f"{file}: no such file")
    size = image_size or backbone.default_size
    try:
        build_backbone(backbone, size, str(file))
    except Exception as exc:
        raise BonedbError(f"{file} does not fit {arch} ({str(exc).splitlines()[0][:200]}): "
                          f"expected Keras' no-top file {backbone.weights_filename(size)}") from exc
    target = keras_models_dir() / backbone.weights_filename(size)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(file, target)
    return target
