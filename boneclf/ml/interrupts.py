"""Ctrl-C during training stops cleanly at the next batch, so the run can be resumed.

Python's default handler raises KeyboardInterrupt wherever the interpreter happens to be. During
`model.fit` that is often inside TensorFlow's runtime (a traced step, the input pipeline's
iterator), which may hand it back as a TensorFlow error instead: the run would be marked failed
and the user told nothing about resuming. So while a run trains, the first Ctrl-C only sets a
flag, and a Keras callback raises KeyboardInterrupt from plain Python at the next batch or epoch
boundary. A second Ctrl-C interrupts at once, as usual.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class StopRequest:
    """Set by the signal handler; read by the callback and by the training loop."""

    def __init__(self) -> None:
        self.requested = False

    def check(self) -> None:
        if self.requested:
            raise KeyboardInterrupt


@contextmanager
def deferred_sigint() -> Iterator[StopRequest]:
    request = StopRequest()
    # Signal handlers belong to the main thread; a caller with its own handler keeps it.
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield request
        return

    def handler(_signum, _frame) -> None:
        request.requested = True
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C is not deferred

    signal.signal(signal.SIGINT, handler)
    try:
        yield request
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def stop_callback(request: StopRequest):
    """A Keras callback that turns a deferred Ctrl-C into KeyboardInterrupt between batches."""
    from .tf_env import keras as _keras

    callback: Any = _keras().callbacks.Callback

    class StopOnRequest(callback):
        def on_train_batch_end(self, batch, logs=None):
            request.check()

        def on_test_batch_end(self, batch, logs=None):
            request.check()

        def on_predict_batch_end(self, batch, logs=None):
            request.check()

        def on_epoch_end(self, epoch, logs=None):
            request.check()

    return StopOnRequest()
