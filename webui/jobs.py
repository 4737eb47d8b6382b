"""One bounded, first-come-first-served queue in front of the GPU.

Every repair, from the API or the UI, runs on the single worker thread of this queue, so
jobs never compete for GPU memory and wait in arrival order. The queue holds at most
`capacity` jobs (waiting + running); beyond that a job is refused at once with QueueFull
and the caller answers 503 with Retry-After instead of piling up requests.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


class QueueFull(Exception):
    """The queue is at capacity; `retry_after` is a hint in seconds."""

    def __init__(self, capacity: int, retry_after: int):
        super().__init__(f"the repair queue is full ({capacity} jobs); retry in {retry_after} s")
        self.retry_after = retry_after


class Timed:
    """A job's result with how long it waited and ran (seconds)."""

    __slots__ = ("value", "wait_s", "run_s")

    def __init__(self, value: object, wait_s: float, run_s: float):
        self.value, self.wait_s, self.run_s = value, wait_s, run_s


class JobQueue:
    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError("queue capacity must be at least 1")
        self.capacity = capacity
        # One worker: the executor's own FIFO queue gives first-come, first-served order.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gpu-worker")
        self._lock = threading.Lock()
        self._jobs = 0
        self._recent_run_s = 1.0  # moving estimate of one job's run time, for Retry-After

    @property
    def depth(self) -> int:
        """Jobs waiting or running."""
        return self._jobs

    @property
    def has_room(self) -> bool:
        return self._jobs < self.capacity

    def submit(self, job: Callable[[], T]) -> Future[Timed]:
        """Queue `job`; its future resolves to Timed(result, wait_s, run_s) or its exception."""
        with self._lock:
            if self._jobs >= self.capacity:
                raise QueueFull(self.capacity, max(1, round(self._jobs * self._recent_run_s)))
            self._jobs += 1
        enqueued = time.perf_counter()
        try:
            future = self._executor.submit(self._run, job, enqueued)
        except BaseException:
            self._release()
            raise
        future.add_done_callback(lambda _: self._release())
        return future

    def run(self, job: Callable[[], T]) -> Timed:
        """Queue `job` and wait for it (for callers on a thread of their own, like Gradio's)."""
        return self.submit(job).result()

    def _run(self, job: Callable[[], T], enqueued: float) -> Timed:
        started = time.perf_counter()
        value = job()
        finished = time.perf_counter()
        self._recent_run_s = 0.8 * self._recent_run_s + 0.2 * (finished - started)
        return Timed(value, started - enqueued, finished - started)

    def _release(self) -> None:
        with self._lock:
            self._jobs -= 1

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=False)
