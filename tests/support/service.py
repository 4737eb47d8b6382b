"""A RepairService on a given engine, without the web app: what the UI handlers' tests drive."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from lama import imageio
from lama.engine import InpaintEngine
from monitor.metrics import ServiceMetrics
from monitor.requestlog import RequestLog
from service.jobs import JobQueue
from service.pipeline import RepairService
from service.storage import OutputStore
from webui.errors import status_of


@contextlib.contextmanager
def repair_service(engine: InpaintEngine, outputs: Path, limits: imageio.ImageLimits = imageio.DEFAULT_LIMITS,
                   requests: RequestLog | None = None) -> Iterator[RepairService]:
    """The service with a queue of 4 workers' capacity, outputs under `outputs`; the queue is shut
    down when the block ends."""
    queue = JobQueue(4)
    metrics = ServiceMetrics(queue_depth=lambda: queue.depth, model_loaded=lambda: 1.0, gpu_available=lambda: 0.0)
    try:
        yield RepairService(engine, OutputStore(outputs), queue, metrics, limits, requests=requests,
                            status_of=status_of)
    finally:
        queue.shutdown()
