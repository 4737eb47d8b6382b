"""The process's pool for CPU work that releases the GIL (zlib, OpenCV), split into pieces.

lama.png compresses and inflates a PNG's segments on it, lama.masks computes the feather ramp
of a mask's strips on it: one pool of a thread per core, so that a server's threads stay
bounded by the cores whatever asks for them (lama.resources counts it once).
"""

from __future__ import annotations

import functools
import math
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")  # cgroup v2: "<quota> <period>" in µs, or "max <period>"


def cores() -> int:
    """The CPU cores this process may run on: its affinity, not the machine's count, and no more
    than its cgroup's CPU quota (a container with a CPU limit sees every core of its node, but
    may use only the quota's worth of them)."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count() or 1
    quota = cpu_quota()
    return max(1, min(usable, quota) if quota else usable)


@functools.cache
def cpu_quota() -> int | None:
    """The cgroup v2 CPU quota in whole cores (rounded up); None without one. Read once: the pools
    are sized by it when they start."""
    try:
        quota, period = CGROUP_CPU_MAX.read_text().split()[:2]
        return None if quota == "max" else max(1, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):
        return None


class LazyPool:
    """A thread pool of `workers` threads (default: one per core), started on first use and
    forgotten in a forked child (whose copy of it would have no threads)."""

    def __init__(self, name: str, workers: int | None = None) -> None:
        self._name = name
        self._workers = workers
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._forget)

    def get(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self._workers or cores(), thread_name_prefix=self._name)
            return self._pool

    def _forget(self) -> None:
        self._pool, self._lock = None, threading.Lock()


# Its tasks never wait on other tasks, so callers in any number of threads (and tasks of other
# pools) can share it without deadlock.
pieces = LazyPool("cpu")


def resize(workers: int) -> None:
    """A pool of `workers` threads instead of one per core, before its first use: for a process
    that shares the cores with others of its kind (service.cpu_workers)."""
    global pieces
    pieces = LazyPool("cpu", workers)


def run_all(function: Callable[[Item], Result], items: Sequence[Item]) -> list[Result]:
    """[function(item) for item in items], the last one in this thread, the others in the
    pool: one item never meets a thread. Items the pool has not started by the time this
    thread gets to them (its threads are busy with another request's work) are taken back and
    done here, so a small job never waits behind a large one."""
    pending = [pieces.get().submit(function, item) for item in items[:-1]]
    last = function(items[-1])
    return [function(item) if future.cancel() else future.result()
            for future, item in zip(pending, items)] + [last]
