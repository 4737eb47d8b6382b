"""One bounded, first-come-first-served queue in front of the GPU, admitting jobs by memory.

Every repair's model runs, from the API or the UI, run on one of this queue's `workers` threads
(the CPU's stages around them run on the requests' own threads: RepairService.submit and
finish). With two, one job's transfers and synchronisations overlap another's kernels: each
worker issues its work on a CUDA stream of its own (lama.device.Device.worker_stream).

Each job carries an estimate of the GPU memory it needs. A job starts only while the estimates
of the jobs running plus its own fit in `budget_bytes`; otherwise it waits, and so does every
job behind it: strict arrival order, so a large job at the head is never overtaken by small
ones and nobody starves. A job starts alone whatever its estimate (deciding what to do with a
job too large for the whole budget is the caller's business, before it queues), so the queue
never deadlocks. Without a budget (the CPU) only the number of workers bounds concurrency.

The queue holds at most `capacity` jobs (waiting + running); beyond that a job is refused at
once with QueueFullError and the caller answers 503 with Retry-After instead of piling up requests.

A job that runs longer than `stuck_after_s` makes the queue report itself stuck (`stuck()`),
so that readiness stops sending work to a server whose worker is held, until that job ends.
Nothing is killed: a Python thread cannot be stopped safely, and the job may yet finish.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar

from lama.errors import QueueFullError

T = TypeVar("T")

log = logging.getLogger(__name__)

DEFAULT_WORKERS = 2
# Far beyond any repair within the image limits on a GPU, yet soon enough for a load balancer
# to stop sending work to a server whose worker some input holds.
DEFAULT_STUCK_AFTER_S = 120.0

# Queues whose workers still run. The workers are daemon threads, so that a queue nobody shuts
# down cannot keep the process alive; but threads that ran torch code must not still exist when
# the interpreter finalizes (torch's thread-local pools abort the process then), so at exit each
# queue is shut down as concurrent.futures does with its executors: queued jobs run, then the
# workers stop.
_LIVE_QUEUES: weakref.WeakSet[JobQueue] = weakref.WeakSet()


@atexit.register
def _shut_down_at_exit() -> None:
    for queue in list(_LIVE_QUEUES):
        queue.shutdown()


class Timed:
    """A job's result with how long it waited and ran (seconds)."""

    __slots__ = ("value", "wait_s", "run_s")

    def __init__(self, value: object, wait_s: float, run_s: float):
        self.value, self.wait_s, self.run_s = value, wait_s, run_s


class Stuck(NamedTuple):
    """The longest-running job, when it has run past the queue's bound."""

    worker: str
    running_s: float
    bound_s: float

    def __str__(self) -> str:
        return (f"a job has run on {self.worker} for {self.running_s:.0f} s, longer than the "
                f"{self.bound_s:g} s bound: not ready until it ends")


@dataclass
class _Job:
    call: Callable[[], Any]
    future: Future
    cost_bytes: int
    exclusive: bool
    enqueued: float


class JobQueue:
    def __init__(self, capacity: int, workers: int = DEFAULT_WORKERS, budget_bytes: int | None = None,
                 stuck_after_s: float | None = DEFAULT_STUCK_AFTER_S, clock: Callable[[], float] = time.monotonic):
        """`stuck_after_s`: how long a job may run before the queue reports itself stuck (None:
        never); `clock` tells the watchdog the time (tests pass their own)."""
        if capacity < 1:
            raise ValueError("queue capacity must be at least 1")
        if workers < 1:
            raise ValueError("the queue needs at least 1 worker")
        if stuck_after_s is not None and not stuck_after_s > 0:
            raise ValueError(f"stuck_after_s must be a positive number of seconds or None, got {stuck_after_s!r}")
        self.capacity = capacity
        self.workers = workers
        self.stuck_after_s = stuck_after_s
        self._clock = clock
        self._budget = budget_bytes
        self._changed = threading.Condition()  # guards everything below; notified on every change
        self._waiting: deque[_Job] = deque()
        self._jobs = 0  # waiting + running
        self._running = 0
        self._admitted = 0  # the running jobs' estimates, in bytes
        self._exclusive_running = False
        self._stopping = False
        self._recent_run_s = 1.0  # moving estimate of one job's run time, for Retry-After
        self._started: dict[str, float] = {}  # worker thread's name -> when its job started (clock)
        self._last_activity = clock()  # when a job last started or ended (clock)
        self._reported_stuck: set[str] = set()  # workers whose job stuck() has already logged
        self._threads = [threading.Thread(target=self._work, name=f"gpu-worker-{index}", daemon=True)
                         for index in range(workers)]
        for thread in self._threads:
            thread.start()
        _LIVE_QUEUES.add(self)

    # ------------------------------------------------------------------ what callers read

    @property
    def depth(self) -> int:
        """Jobs waiting or running."""
        return self._jobs

    @property
    def idle_s(self) -> float:
        """Seconds since the last job started or ended while none waits or runs; 0 while one does."""
        with self._changed:
            return 0.0 if self._jobs else max(0.0, self._clock() - self._last_activity)

    @property
    def has_room(self) -> bool:
        return self._jobs < self.capacity

    @property
    def running(self) -> int:
        """Jobs running now."""
        return self._running

    @property
    def budget_bytes(self) -> int | None:
        """GPU memory the running jobs may hold together; None: not bounded."""
        return self._budget

    @property
    def admitted_bytes(self) -> int:
        """The estimates of the jobs running now."""
        return self._admitted

    def stuck(self) -> Stuck | None:
        """The longest-running job if it has run longer than `stuck_after_s`, else None.
        Cheap: readiness asks at every probe. It clears by itself when that job ends."""
        if self.stuck_after_s is None:
            return None
        now = self._clock()
        with self._changed:
            longest = min(self._started.items(), key=lambda item: item[1], default=None)
            if longest is None or now - longest[1] <= self.stuck_after_s:
                return None
            worker, started = longest
            first_report = worker not in self._reported_stuck
            self._reported_stuck.add(worker)
        stuck = Stuck(worker, now - started, self.stuck_after_s)
        if first_report:
            log.error("%s", stuck)
        return stuck

    def set_budget(self, budget_bytes: int | None) -> None:
        """Known only once the warm-up has measured what the process holds at rest."""
        with self._changed:
            self._budget = budget_bytes
            self._changed.notify_all()

    def admission(self) -> dict[str, Any]:
        """The budget and what is admitted and waiting, for /healthz and /metrics."""
        with self._changed:
            return {"budget_bytes": self._budget, "admitted_bytes": self._admitted,
                    "waiting_bytes": sum(job.cost_bytes for job in self._waiting),
                    "running": self._running, "waiting": len(self._waiting), "workers": self.workers}

    # ------------------------------------------------------------------ submitting

    def submit(self, job: Callable[[], T], cost_bytes: int | None = None, exclusive: bool = False) -> Future[Timed]:
        """Queue `job`, which needs `cost_bytes` of the budget while it runs (None: nothing
        budgeted); `exclusive` jobs run alone (the warm-up, which measures memory). The future
        resolves to Timed(result, wait_s, run_s) or to the job's exception."""
        future: Future[Timed] = Future()
        with self._changed:
            if self._stopping:
                raise RuntimeError("cannot queue a job after the queue was shut down")
            self._refuse_if_full()
            self._jobs += 1
            self._waiting.append(_Job(job, future, max(0, cost_bytes or 0), exclusive, time.perf_counter()))
            self._changed.notify_all()
        return future

    def check_room(self) -> None:
        """QueueFullError now if a job would be refused: for callers with costly work to do before
        they submit (decoding an upload). submit() checks again."""
        with self._changed:
            self._refuse_if_full()

    def _refuse_if_full(self) -> None:  # under self._changed
        if self._jobs >= self.capacity:
            retry_after_s = max(1, round(self._jobs * self._recent_run_s / self.workers))
            raise QueueFullError(f"the repair queue is full ({self.capacity} jobs); retry in {retry_after_s} s",
                                 retry_after_s)

    def run(self, job: Callable[[], T], cost_bytes: int | None = None, exclusive: bool = False) -> Timed:
        """Queue `job` and wait for it (for callers on a thread of their own, like Gradio's)."""
        return self.submit(job, cost_bytes, exclusive).result()

    # ------------------------------------------------------------------ the workers

    def _head_may_start(self) -> bool:
        head = self._waiting[0]
        if self._running == 0:
            return True  # alone, any job starts: nothing else could ever free room for it
        if head.exclusive or self._exclusive_running:
            return False
        return self._budget is None or self._admitted + head.cost_bytes <= self._budget

    def _work(self) -> None:
        # One job per call: the job (its upload, its output) is a local of _run_next's alone, so
        # an idle worker waiting for the next one holds nothing of the last.
        while self._run_next():
            pass

    def _run_next(self) -> bool:
        """Waits for the next job that may start and runs it; False once the queue has stopped."""
        with self._changed:
            while not (self._waiting and self._head_may_start()):
                if self._stopping and not self._waiting:
                    return False
                self._changed.wait()
            job = self._waiting.popleft()
            self._running += 1
            self._admitted += job.cost_bytes
            self._exclusive_running = job.exclusive
            self._started[threading.current_thread().name] = self._last_activity = self._clock()
            # The next job may fit beside this one: let another idle worker look.
            self._changed.notify_all()
        self._run(job)
        return True

    def _run(self, job: _Job) -> None:
        worker = threading.current_thread().name
        started = time.perf_counter()
        outcome: Timed | None = None
        failure: BaseException | None = None
        if job.future.set_running_or_notify_cancel():
            try:
                value = job.call()
                finished = time.perf_counter()
                outcome = Timed(value, started - job.enqueued, finished - started)
            except BaseException as error:  # noqa: BLE001 - delivered to the caller through the future
                failure = error
        with self._changed:
            self._running -= 1
            self._admitted -= job.cost_bytes
            self._exclusive_running = False
            self._jobs -= 1
            self._recent_run_s = 0.8 * self._recent_run_s + 0.2 * (time.perf_counter() - started)
            del self._started[worker]
            self._last_activity = self._clock()
            was_stuck = worker in self._reported_stuck
            self._reported_stuck.discard(worker)
            self._changed.notify_all()
        if was_stuck:
            log.warning("the job that held %s ended after %.0f s: no longer stuck", worker,
                        time.perf_counter() - started)
        # After the slot and the bytes are released: a caller that has its result sees them free.
        if outcome is not None:
            job.future.set_result(outcome)
        elif failure is not None:
            job.future.set_exception(failure)

    def shutdown(self, cancel_waiting: bool = False, timeout_s: float | None = None) -> None:
        """Refuse new jobs, run the ones queued (or cancel them), then stop the workers, waiting at
        most `timeout_s` for them (None: until they end). A server stopping after its drain passes
        a bound: what still runs then is abandoned to the process's exit (uvicorn re-raises the
        SIGTERM, which ends the process without finalizing the interpreter)."""
        with self._changed:
            self._stopping = True
            if cancel_waiting:
                while self._waiting:
                    job = self._waiting.popleft()
                    self._jobs -= 1
                    job.future.cancel()
            self._changed.notify_all()
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        if any(thread.is_alive() for thread in self._threads):
            log.warning("shutdown: %d repair(s) still running after %g s; left to the process's exit",
                        self._running, timeout_s)
            return
        _LIVE_QUEUES.discard(self)
