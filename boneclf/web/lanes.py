"""Expensive work off the request loop, bounded, so that cheap pages keep answering under load.

A `Lane` runs one kind of work (a TensorFlow model, a split audit) in threads of its own, at most
`workers` jobs at once. A request for a job that is already queued or running waits for that job
instead of starting another; when `waiting` more jobs are queued, a new one is refused with `Busy`
(503) rather than queued without end. Waiting requests hold no thread: the routes that use a lane
are `async` and await it, so the thread pool that serves cheap pages is never taken up.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


class Busy(Exception):
    """Too many expensive jobs queued: answered 503 with Retry-After."""

    retry_after = 30


class Lane:
    def __init__(self, name: str, workers: int = 1, waiting: int = 4):
        self.name = name
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"bonedb-{name}")
        self._limit = workers + waiting
        self._jobs: dict[Hashable, asyncio.Future] = {}

    @property
    def queued(self) -> int:
        """Jobs queued or running now."""
        return len(self._jobs)

    async def run(self, key: Hashable, work: Callable[[], T]) -> T:
        """WORK's result; KEY names the job, so that requests for the same job share one run."""
        loop = asyncio.get_running_loop()
        # Jobs of a loop that has ended (a test client's) can no longer be awaited or forgotten.
        self._jobs = {k: j for k, j in self._jobs.items() if j.get_loop() is loop or not j.get_loop().is_closed()}
        job = self._jobs.get(key)
        if job is None:
            if len(self._jobs) >= self._limit:
                raise Busy(f"the server is busy with {len(self._jobs)} {self.name} jobs: try again in a minute")
            job = loop.run_in_executor(self._executor, work)
            self._jobs[key] = job
            job.add_done_callback(lambda done: self._forget(key, done))
        # A request that goes away (a closed tab) leaves the job running for the others who wait on it.
        return await asyncio.shield(job)

    def _forget(self, key: Hashable, done: asyncio.Future) -> None:
        if self._jobs.get(key) is done:
            del self._jobs[key]
        if not done.cancelled():
            done.exception()  # retrieved, so that asyncio does not log it when nobody waited any more

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
