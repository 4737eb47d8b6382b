"""The service's Prometheus instruments, in base units (seconds, bytes, ratios 0..1).

Each ServiceMetrics owns its registry rather than using the process-global one, so
that several apps (tests) in one process do not collide. Values that already live
elsewhere (queue depth, model state) are read at scrape time through callbacks.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# 10 ms (a small image on a fast GPU) to 60 s (a huge one on a CPU).
DURATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# What generate_latest() writes with its default escaping is the classic text format 0.0.4,
# which every scraper reads; prometheus_client >= 0.22 names 1.0.0 in CONTENT_TYPE_LATEST, and
# its own handler sends that only to scrapers that ask for it (Accept with escaping=...).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class ServiceMetrics:
    def __init__(self, queue_depth: Callable[[], float], model_loaded: Callable[[], float],
                 gpu_available: Callable[[], float]):
        self.registry = CollectorRegistry()
        self.requests = Counter("inpaint_requests", "Repair requests by HTTP status",
                                ["status"], registry=self.registry)
        self.duration = Histogram("inpaint_request_duration_seconds", "Repair request duration, end to end",
                                  buckets=DURATION_BUCKETS, registry=self.registry)
        Gauge("inpaint_queue_depth", "Repair jobs waiting or running", registry=self.registry
              ).set_function(queue_depth)
        Gauge("inpaint_model_loaded", "1 when big-lama is loaded (0: OpenCV fallback)", registry=self.registry
              ).set_function(model_loaded)
        Gauge("inpaint_gpu_available", "1 when the engine runs on a CUDA GPU", registry=self.registry
              ).set_function(gpu_available)

    def observe_request(self, status: int, seconds: float) -> None:
        self.requests.labels(status=str(status)).inc()
        self.duration.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
