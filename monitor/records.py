"""What the monitor records, as types: one sampler Sample (logs/monitor.jsonl, /healthz's
`sample`, GET /api/v1/monitor's `samples`) and one RequestRecord per repair (logs/requests.jsonl,
the API's `requests`). They travel as JSON; the resource report, a client of the HTTP API that
imports nothing of the project, reads the same keys. Units are base units: seconds, bytes,
ratios 0..1 (percentages where the name says percent); null where a value is unknown.
"""

from __future__ import annotations

from typing import NotRequired, TypedDict


class GpuReading(TypedDict):
    """One GPU as NVML reads it; only those CUDA_VISIBLE_DEVICES shows, `index` being the CUDA
    ordinal (torch's cuda:<index>)."""

    index: int
    name: str
    driver_version: str | None
    utilization_ratio: float | None
    memory_used_bytes: int
    memory_total_bytes: int
    memory_reserved_bytes: int | None
    temperature_celsius: float | None
    power_watts: float | None
    sm_clock_mhz: int | None


class AllocatorReading(TypedDict):
    """The engine's CUDA caching allocator (null on the CPU)."""

    memory_allocated_bytes: int
    memory_reserved_bytes: int
    max_memory_allocated_bytes: int


class Sample(TypedDict):
    """Every sample has every key, in this order."""

    ts: float  # unix seconds
    cpu_percent: float | None
    cpu_percent_per_core: list[float]
    cpu_peak_core_percent: float | None
    process_cpu_percent: float | None  # can exceed 100 (several cores)
    process_rss_bytes: int | None
    process_threads: int | None
    process_open_fds: int | None
    system_memory_used_bytes: int | None
    system_memory_available_bytes: int | None
    system_memory_total_bytes: int | None
    disk_write_bytes: int | None  # cumulative, on the device holding outputs/
    cgroup_memory_usage_bytes: int | None  # null outside a memory-limited cgroup
    cgroup_memory_limit_bytes: int | None
    gpu: list[GpuReading] | None  # null: no NVML, no GPU, or NVML failing (Sampler.healthy says which)
    torch: AllocatorReading | None


SAMPLE_KEYS = tuple(Sample.__annotations__)


class UserWait(TypedDict):
    """What the editor's user waited for a repair, from the click to the result on screen, as the
    browser measured it (seconds); upload and transfer are the parts the server does not see."""

    total: float
    upload: float
    transfer: float


class RequestRecord(TypedDict):
    """One repair request, whatever its outcome."""

    id: str
    ts: float
    width: int | None
    height: int | None
    mask_fraction: float | None
    strategy: str  # what ran: crop when a job too large for the GPU budget was cropped
    requested_strategy: str
    device: str
    precision: str
    status: int  # as the client saw it (the web layer's status for the outcome)
    error: str | None
    timings: dict[str, float]  # lama.stages.Stage value -> seconds
    peak_gpu_bytes: int | None
    rss_bytes: int
    waited: NotRequired[UserWait]  # the editor's repairs, once the page reported it (RequestLog.amend)
