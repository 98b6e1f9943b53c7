"""bonedb's own Keras layers, registered so that saved `.keras` models load without custom code."""

from __future__ import annotations

from typing import Any

from .tf_env import keras as _keras

keras = _keras()
_Layer: Any = keras.layers.Layer  # a base class from a module loaded at run time (Keras has no types)


@keras.saving.register_keras_serializable(package="bonedb")
class ChannelFlip(_Layer):
    """RGB to BGR (reverses the channel axis), as Keras' caffe-mode preprocess_input does.

    A named layer rather than a Lambda, so models save and load in Keras' safe mode.
    """

    def call(self, inputs):
        return keras.ops.flip(inputs, axis=-1)
