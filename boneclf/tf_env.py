"""Importing TensorFlow quietly: its C++ start-up chatter is noise in a command-line tool."""

from __future__ import annotations

import os


def tensorflow():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    return tf
