"""The warm-up: the engine's first runs, alone on the GPU, then the memory budget they measure,
and the CPU workers' first repair preparation.

Runs on a thread of its own so that the server answers probes meanwhile (/readyz is 503 until
the service is warm); it cannot be interrupted halfway (a CUDA kernel cannot), so stop() waits.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from functools import partial

from lama.engine import InpaintEngine
from lama.kernel_helper import KernelHelper
from service.jobs import JobQueue
from service.pipeline import RepairService
from service.startup import StartupTimeline

log = logging.getLogger(__name__)


class WarmUp:
    """The engine's warm-up, then a check that the CPU worker processes serve, then ready."""

    def __init__(self, engine: InpaintEngine, queue: JobQueue, service: RepairService, preset: str,
                 settle: Callable[[], None] | None = None, kernels: KernelHelper | None = None,
                 timeline: StartupTimeline | None = None):
        """`preset`: its name, for the log; its memory share is the engine device's (Device.limit_memory).
        `settle`: called once warm, before the service says so: the composition root gives back
        what the start-up freed (the checkpoint's parsing, the CPU side of moving the weights to the
        device, the warm-up's buffers), so that the process is at its resting size from the first
        probe on, not only after the first sweep. `kernels`: the process compiling the warm-up's
        kernels beside the start-up (waited for before the warm-up compiles, so that it finds them
        in the cache and then has the GPU alone), and the record of a completed warm-up (written
        after it). `timeline`: the start-up's milestones so far, to which the warm-up adds its own,
        logged once the service is ready."""
        self.engine, self.queue, self.service, self.preset = engine, queue, service, preset
        self.settle, self.kernels, self.timeline = settle, kernels, timeline
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.timeline is not None:
            self.timeline.mark("serving")  # the app's lifespan starts the warm-up: probes are answered now
        self._thread = threading.Thread(target=self.run, name="warm-up", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 60.0) -> None:
        if self.kernels is not None:
            self.kernels.stop()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def run(self) -> None:
        # Alone on the GPU: it measures the memory each size needs. The helper's process is waited
        # for once the warm-up has recorded which kernels it needs, before it compiles them.
        wait_for = self.kernels.wait if self.kernels is not None else None
        self.queue.run(partial(self.engine.warmup, wait_for=wait_for), exclusive=True)
        if self.timeline is not None:
            self.timeline.mark("warmed up")
        if self.kernels is not None:
            self.kernels.mark_complete()
        budget = self.engine.gpu_budget()
        self.queue.set_budget(budget)
        self._check_cpu_workers()
        if self.settle is not None:
            try:
                self.settle()
            except Exception as error:  # noqa: BLE001 - memory not given back is no reason not to serve
                log.warning("after the warm-up, giving back freed memory failed: %s: %s", type(error).__name__, error)
        # Marked ready before /readyz can say so: the line's figure is never after a probe's first 200.
        startup = self.timeline.summary() if self.timeline is not None else None
        self.service.warm = True
        workers = self.queue.workers
        if budget is None:
            log.info("warm: ready to serve (%d worker(s), no GPU memory budget)", workers)
        else:
            log.info("warm: ready to serve (%d workers; GPU memory budget %.2f GB: the %s preset's %.0f%% of the "
                     "card less %.2f GB held at rest)", workers, budget / 1e9, self.preset,
                     self.engine.device.memory_fraction * 100, self.engine.steady_gpu_bytes / 1e9)
        if startup is not None:
            log.info("start-up: %s", startup)

    def _check_cpu_workers(self) -> None:
        """Each CPU worker prepares a tiny repair. A worker that cannot (a broken environment: its
        process died, or its steps fail) would fail the repairs handed to it under load with
        worker_lost: its pool is stopped instead, and every repair's CPU steps run in this
        process, as without workers."""
        workers = self.service.cpu_workers
        if workers is None:
            return
        try:
            workers.check()
        except Exception as error:  # noqa: BLE001 - whatever it is, the service serves without them
            log.error("CPU workers: one could not prepare a repair (%s: %s); they are stopped and every repair's "
                      "CPU steps run in the server's process", type(error).__name__, error)
            self.service.cpu_workers = None
            workers.stop()
