"""How the library reports progress without knowing about terminals.

Long-running functions take `progress`, a factory called as `progress(total, label)` that
returns a context manager yielding `advance(n)`. The CLI passes a progress bar; the default
is silent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

Advance = Callable[[int], None]
ProgressFactory = Callable[[int, str], AbstractContextManager[Advance]]


@contextmanager
def silent(total: int, label: str) -> Iterator[Advance]:
    yield lambda n: None
