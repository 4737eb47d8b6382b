"""How busy the service's GPUs were while a stretch of load ran: a share of 0..1 for each GPU
watched, by its index.

NVML's utilization is the share of its last sample period (1/6 s to 1 s, by GPU) in which a
kernel ran. It is read from one of two places, the finer first:
  * NVML on this machine, every POLL_S while the stretch lasts, for every GPU of the machine:
    when the service listens on a loopback address. Behind a load balancer on the same box the
    service is several replicas, one per GPU, and each GPU's share is its replica's;
  * the service's own samples (/api/v1/monitor, gpu[].utilization_ratio of its engine's GPU),
    one per sampling interval: coarser, but from anywhere; one GPU.
A service on the CPU has no GPU to be busy: nothing is watched.
"""

from __future__ import annotations

import statistics
import threading
import time
from typing import Any, Protocol

from loadreport.analysis import Timeline, gpu_index_of
from loadreport.client import ServiceClient, is_loopback
from loadreport.collect import MonitorCollector

POLL_S = 0.1
MAX_WAIT_S = 5.0  # for the service's sample that covers the end of a stretch


class BusyMeter(Protocol):
    source: str  # for the output's header

    def begin(self) -> None: ...

    def end(self) -> dict[int, float]:
        """The busy share of each GPU since begin(), by GPU index; a GPU nothing was read of is left out."""


def busy_meter(client: ServiceClient, health: dict[str, Any]) -> BusyMeter:
    """The best meter for this service (its /healthz says which device it runs on)."""
    gpu_index = gpu_index_of(health)
    if gpu_index is None:
        return NoGpu()
    if is_loopback(client.base_url) and (local := LocalNvml.open()) is not None:
        return local
    collector = MonitorCollector(client)
    collector.first_poll()
    return ServiceSamples(collector, gpu_index)


class NoGpu:
    source = "n/a: the service runs on the CPU"

    def begin(self) -> None:
        pass

    def end(self) -> dict[int, float]:
        return {}


class LocalNvml:
    def __init__(self, nvml: Any, handles: list[Any]):
        self._nvml = nvml
        self._handles = handles
        self._readings: dict[int, list[float]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        gpus = "its GPU" if len(handles) == 1 else f"each of its {len(handles)} GPUs"
        self.source = f"NVML on this machine, {gpus}, read every {POLL_S:g} s"

    @classmethod
    def open(cls) -> LocalNvml | None:
        """Every GPU of this machine; None without NVML (no driver) or without a GPU."""
        import pynvml  # imported here: on most client machines there is no GPU to ask

        try:
            pynvml.nvmlInit()
            count = pynvml.nvmlDeviceGetCount()
            return cls(pynvml, [pynvml.nvmlDeviceGetHandleByIndex(index) for index in range(count)]) if count else None
        except pynvml.NVMLError:
            return None

    def begin(self) -> None:
        self._readings = {index: [] for index in range(len(self._handles))}
        self._stop.clear()
        self._thread = threading.Thread(target=self._poll, name="nvml-busy", daemon=True)
        self._thread.start()

    def end(self) -> dict[int, float]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        return {index: statistics.fmean(readings) for index, readings in self._readings.items() if readings}

    def _poll(self) -> None:
        while not self._stop.wait(POLL_S):
            for index, handle in enumerate(self._handles):
                try:
                    self._readings[index].append(self._nvml.nvmlDeviceGetUtilizationRates(handle).gpu / 100)
                except self._nvml.NVMLError:
                    pass  # a reading the GPU did not give: the others still count


class ServiceSamples:
    source = "the service's own samples (/api/v1/monitor)"

    def __init__(self, collector: MonitorCollector, gpu_index: int):
        self._collector = collector
        self._gpu_index = gpu_index
        self._started = time.time()

    def begin(self) -> None:
        self._started = time.time()

    def end(self) -> dict[int, float]:
        ended = time.time()
        interval_s = self._collector.interval_s
        if interval_s is None:  # the service samples nothing
            return {}
        time.sleep(min(interval_s, MAX_WAIT_S))  # the sample taken after the end covers its last moments
        self._collector.poll()
        timeline = Timeline(self._collector.samples, [], self._collector.offset_s, interval_s, self._gpu_index)
        values = [gpu["utilization_ratio"] for sample in timeline.window({"start": self._started, "end": ended})
                  if (gpu := timeline.gpu(sample)) and isinstance(gpu.get("utilization_ratio"), (int, float))]
        return {self._gpu_index: statistics.fmean(values)} if values else {}
