"""Importing TensorFlow and Keras 3 quietly.

TensorFlow's C++ runtime prints start-up notes (oneDNN, CUDA probing) straight to file
descriptor 2 before any Python logging is set up, and TF_CPP_MIN_LOG_LEVEL no longer stops
them all. They are noise in a command-line tool, so the import and the first device query run
with fd 2 sent to a temporary file, which is shown only if the import fails.
"""

from __future__ import annotations

import os
import sys
import tempfile
from typing import Any

_loaded: Any = None


def tensorflow() -> Any:
    """The tensorflow module, imported once with its start-up chatter captured."""
    global _loaded
    if _loaded is None:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        with tempfile.TemporaryFile(mode="w+b") as capture:
            sys.stderr.flush()
            saved = os.dup(2)
            os.dup2(capture.fileno(), 2)
            try:
                import tensorflow as tf

                tf.config.list_physical_devices()  # CUDA probing prints here, once
            except BaseException:
                os.dup2(saved, 2)
                capture.seek(0)
                sys.stderr.write(capture.read().decode(errors="replace"))
                raise
            finally:
                os.dup2(saved, 2)
                os.close(saved)
        _loaded = tf
    return _loaded


def keras() -> Any:
    """Keras 3 (the `keras` package), after TensorFlow is loaded quietly."""
    tensorflow()
    import keras as keras_module

    return keras_module
