"""One owner for every thread the service runs: started in one place, stopped in one place.

    thread               started by                      stopped by (reverse order)
    monitor-sampler      Lifecycle.start: Sampler.start   Sampler.stop (joins, closes NVML and its log)
    outputs-retention    Lifecycle.start: Retention.start Retention.stop (joins)
    gpu-worker-N         JobQueue() (a queue is useless  JobQueue.shutdown: queued jobs are cancelled (the
                         without its workers)             drain has waited its bound), a running one gets 1 s
    warm-up              Lifecycle.start: WarmUp.start    WarmUp.stop (joins: it cannot be cut short)
    job-finisher-N       BatchJobs, when a job has run    BatchJobs.shutdown (joins, after the queue's: the
                         (encodes and saves its result)   jobs it cancels are recorded as interrupted)
    cpu-worker-N-reader  Lifecycle.start: CpuWorkers.start CpuWorkers.stop (each worker process ends
                         (and the worker process)         when its socket is shut down; joins)
    result-saver-N       RepairService, when an API       RepairService.finish_saves (joins: the files of
                         repair has been answered         the last answers are written)

The web layer enters `lifespan` as the ASGI app's lifespan, so uvicorn (and a TestClient) start
the parts before the first request and stop them after the last response. A part that fails to
stop is logged; the others are still stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Part:
    name: str
    start: Callable[[], object] | None
    stop: Callable[[], object]


class Lifecycle:
    def __init__(self) -> None:
        self._parts: list[Part] = []
        self._started: list[Part] = []

    def add(self, name: str, start: Callable[[], object] | None, stop: Callable[[], object]) -> None:
        """Started in the order added (None: it started when it was made), stopped in reverse."""
        self._parts.append(Part(name, start, stop))

    @property
    def running(self) -> list[str]:
        return [part.name for part in self._started]

    def start(self) -> None:
        for part in self._parts:
            if part in self._started:
                continue
            if part.start is not None:
                part.start()
            self._started.append(part)

    def stop(self) -> None:
        while self._started:
            part = self._started.pop()
            try:
                part.stop()
            except Exception:  # noqa: BLE001 - one part's failure must not leave the others running
                log.exception("stopping %s failed", part.name)

    @contextlib.asynccontextmanager
    async def lifespan(self, _app: object) -> AsyncIterator[None]:
        self.start()
        try:
            yield
        finally:
            # Stopping joins threads (the queue lets its jobs finish): not on the event loop.
            await asyncio.to_thread(self.stop)
