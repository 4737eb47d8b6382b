"""The service's Prometheus instruments, in base units (seconds, bytes, ratios 0..1).

Each ServiceMetrics owns its registry rather than using the process-global one, so
that several apps (tests) in one process do not collide. Values that already live
elsewhere (queue depth, model state, the sampler's latest sample, the GPU memory budget) are
read at scrape time through callbacks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

# 10 ms (a small image on a fast GPU) to 60 s (a huge one on a CPU).
DURATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# Stages are shorter than whole requests: decoding a small upload takes about a millisecond.
STAGE_BUCKETS = (0.001, 0.0025, 0.005, *DURATION_BUCKETS)
# 64 MiB (a small image in fp16) to 64 GiB (more than any card this runs on), doubling.
PEAK_GPU_BUCKETS = tuple(float(2**power) for power in range(26, 37))
# What generate_latest() writes with its default escaping is the classic text format 0.0.4,
# which every scraper reads; prometheus_client >= 0.22 names 1.0.0 in CONTENT_TYPE_LATEST, and
# its own handler sends that only to scrapers that ask for it (Accept with escaping=...).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# (metric name, help, sample key): per GPU, labelled with the GPU's index ...
GPU_GAUGES = (
    ("inpaint_gpu_utilization_ratio", "Share of time the GPU was busy (NVML)", "utilization_ratio"),
    ("inpaint_gpu_memory_used_bytes", "GPU memory in use, all processes (NVML)", "memory_used_bytes"),
    ("inpaint_gpu_memory_total_bytes", "GPU memory in all (NVML)", "memory_total_bytes"),
    ("inpaint_gpu_temperature_celsius", "GPU temperature (NVML)", "temperature_celsius"),
    ("inpaint_gpu_power_watts", "GPU power draw (NVML)", "power_watts"),
)
# ... and for the host. The process's own CPU seconds and memory are prometheus_client's standard
# ProcessCollector (process_cpu_seconds_total, process_resident_memory_bytes, ...), read at scrape time.
HOST_GAUGES = (
    ("inpaint_system_memory_used_bytes", "Memory in use on the host", "system_memory_used_bytes"),
)


class SampleCollector:
    """The gauges of the sampler's latest sample, read when scraped so that /metrics never shows
    older figures than the sampler has. A value the sample lacks (no GPU, no sample yet, a source
    failing) is left out rather than written as a number that would be a lie."""

    def __init__(self, latest_sample: Callable[[], Mapping[str, Any] | None]):
        self.latest_sample = latest_sample

    def collect(self) -> Iterator[Metric]:
        sample = self.latest_sample()
        if sample is None:
            return
        for name, documentation, key in GPU_GAUGES:
            family = GaugeMetricFamily(name, documentation, labels=["gpu"])
            for gpu in sample.get("gpu") or ():
                if gpu.get(key) is not None:
                    family.add_metric([str(gpu["index"])], gpu[key])
            if family.samples:
                yield family
        yield from scalar_gauges(HOST_GAUGES, sample)


def scalar_gauges(gauges: tuple[tuple[str, str, str], ...], values: Mapping[str, Any]) -> Iterator[Metric]:
    """One unlabelled gauge per (name, help, key) whose value is known; the others are left out."""
    for name, documentation, key in gauges:
        if values.get(key) is not None:
            yield GaugeMetricFamily(name, documentation, value=values[key])


# (metric name, help, key) of the GPU memory admission, read from the queue's view of it.
BUDGET_GAUGES = (
    ("inpaint_gpu_budget_bytes", "GPU memory concurrent repairs may hold together (the preset's share of "
                                 "the card less what the service holds at rest)", "budget_bytes"),
    ("inpaint_gpu_admitted_bytes", "Estimated GPU memory of the repairs running now", "admitted_bytes"),
    ("inpaint_gpu_waiting_bytes", "Estimated GPU memory of the repairs waiting for room in the budget",
     "waiting_bytes"),
)


class BudgetCollector:
    """The memory budget's gauges at scrape time; the budget is left out where there is none (the
    CPU), rather than shown as a number."""

    def __init__(self, admission: Callable[[], Mapping[str, Any] | None]):
        self.admission = admission

    def collect(self) -> Iterator[Metric]:
        admission = self.admission()
        if admission is not None:
            yield from scalar_gauges(BUDGET_GAUGES, admission)


class OptionalGauge:
    """A gauge read at scrape time and left out while its reading is None (unknown), rather than
    written as a number that would be a lie."""

    def __init__(self, name: str, documentation: str, read: Callable[[], float | None]):
        self.name, self.documentation, self.read = name, documentation, read

    def collect(self) -> Iterator[Metric]:
        value = self.read()
        if value is not None:
            yield GaugeMetricFamily(self.name, self.documentation, value=value)


class CallbackCounter:
    """A counter kept elsewhere (the engine counts its fp16 fallbacks), read when scraped."""

    def __init__(self, name: str, documentation: str, read: Callable[[], float]):
        self.name, self.documentation, self.read = name, documentation, read

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(self.name, self.documentation, value=self.read())


class ServiceMetrics:
    def __init__(self, queue_depth: Callable[[], float], model_loaded: Callable[[], float],
                 gpu_available: Callable[[], float], *,
                 latest_sample: Callable[[], Mapping[str, Any] | None] = lambda: None,
                 gpu_admission: Callable[[], Mapping[str, Any] | None] = lambda: None,
                 fp16_fallbacks: Callable[[], float] = lambda: 0.0):
        self.registry = CollectorRegistry()
        self.requests = Counter("inpaint_requests", "Repair requests by HTTP status",
                                ["status"], registry=self.registry)
        self.duration = Histogram("inpaint_request_duration_seconds", "Repair request duration, end to end",
                                  buckets=DURATION_BUCKETS, registry=self.registry)
        self.stage_duration = Histogram("inpaint_stage_duration_seconds",
                                        "Time a repair spent in each stage (decode, queue, infer, ...)",
                                        ["stage"], buckets=STAGE_BUCKETS, registry=self.registry)
        self.peak_gpu = Histogram("inpaint_request_peak_gpu_memory_bytes",
                                  "Peak GPU memory the CUDA allocator held during one repair",
                                  buckets=PEAK_GPU_BUCKETS, registry=self.registry)
        Gauge("inpaint_queue_depth", "Repair jobs waiting or running", registry=self.registry
              ).set_function(queue_depth)
        Gauge("inpaint_model_loaded", "1 when big-lama is loaded (0: OpenCV fallback)", registry=self.registry
              ).set_function(model_loaded)
        Gauge("inpaint_gpu_available", "1 when the engine runs on a CUDA GPU", registry=self.registry
              ).set_function(gpu_available)
        self.registry.register(SampleCollector(latest_sample))
        ProcessCollector(registry=self.registry)
        self.registry.register(BudgetCollector(gpu_admission))
        # Written as inpaint_fp16_fallbacks_total.
        self.registry.register(CallbackCounter(
            "inpaint_fp16_fallbacks",
            "Model runs whose fp16 output overflowed (not finite) and that were computed again in fp32",
            fp16_fallbacks))

    def watch_cpu_workers(self, in_flight: Callable[[], float], restarts: Callable[[], float]) -> None:
        """The CPU worker processes' gauges, for a server that has them (service.cpu_workers)."""
        Gauge("inpaint_cpu_workers_in_flight", "Repairs the CPU worker processes hold or are preparing",
              registry=self.registry).set_function(in_flight)
        # Written as inpaint_cpu_worker_restarts_total.
        self.registry.register(CallbackCounter(
            "inpaint_cpu_worker_restarts", "CPU worker processes found dead (their repairs failed with 503 "
            "worker_lost) and started again", restarts))

    def watch_saves(self, pending: Callable[[], float]) -> None:
        """The repairs answered whose files are still being written (service.pipeline's saver)."""
        Gauge("inpaint_saves_pending", "Repairs answered whose result files are still being written (a disk "
              "falling behind keeps it up)", registry=self.registry).set_function(pending)

    def watch_pinned_host(self, held: Callable[[], int | None]) -> None:
        """The page-locked host memory the engine's transfers keep (lama.device), on a GPU server."""
        self.registry.register(OptionalGauge(
            "inpaint_pinned_host_bytes", "Page-locked host memory held for transfers to and from the GPU "
            "(part of the resident memory; given back after a while idle)", held))

    def observe_request(self, status: int, seconds: float) -> None:
        self.requests.labels(status=str(status)).inc()
        self.duration.observe(seconds)

    def observe_stages(self, timings: Mapping[str, float | None]) -> None:
        """One observation per stage that ran; "total" is left to inpaint_request_duration_seconds,
        and a stage a request never reached (None) is not a zero-second stage."""
        for stage, seconds in timings.items():
            if stage != "total" and seconds is not None:
                self.stage_duration.labels(stage=stage).observe(seconds)

    def observe_peak_gpu(self, peak_bytes: int | None) -> None:
        """None (a repair on the CPU) is not observed."""
        if peak_bytes is not None:
            self.peak_gpu.observe(peak_bytes)

    def render(self) -> bytes:
        return generate_latest(self.registry)
