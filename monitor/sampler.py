"""The resource sampler: what `nvidia-smi -l 1`, `htop` and `pidstat` showed by hand, read by one
daemon thread every interval and kept twice, as JSON lines on disk (size-rotated) and in a ring
buffer in memory (the last hour) for the dashboard, /healthz and /metrics.

Per sample (fields and units: monitor/records.py's Sample):
- the GPUs, through NVML: utilization, memory used/total/reserved, temperature, power, SM clock;
- this process's CUDA allocator, through a reader the composition root hands in (the engine's
  Device.allocator_reading; the monitor imports no torch): what it holds, which is right even
  inside a container, where NVML's per-process accounting speaks of host PIDs;
- the host, through psutil and the cgroup files: CPU overall and per core, this process's CPU,
  RSS, threads and descriptors, system memory, disk writes of the outputs volume, and the
  container's memory limit and usage.

A machine without NVML or without a GPU is normal (CI, laptops): `gpu` is null. A source that
fails at run time leaves its fields null and is logged once (and when it recovers); the other
sources and the thread go on. Only the GPU's failing (it fell off the bus) makes `healthy` False.

Its cost, as a share of one core: python -m monitor.sampler --measure-overhead 30 [--interval 1.0]
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from monitor.jsonl import RotatingJsonl
from monitor.records import SAMPLE_KEYS, AllocatorReading, Sample

log = logging.getLogger(__name__)

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_SELF_CGROUP = Path("/proc/self/cgroup")
# cgroup v1 writes "no limit" as the largest page-aligned signed 64-bit number.
UNLIMITED = 2**62
# The sources whose failure means the GPU is gone, which is what `healthy` (and so readiness) is about;
# a host reading failing (a cgroup file, disk counters) is logged but takes nobody out of rotation.
GPU_SOURCES = {"nvml", "torch"}


@dataclass
class _Gpu:
    index: int  # the CUDA ordinal, torch's cuda:<index>
    handle: Any
    name: str
    memory_v2: bool  # nvmlDeviceGetMemoryInfo_v2 (with the driver's reserved memory) works here
    driver_version: str | None  # the NVIDIA driver's, the same for every GPU; what the report's machine table names


class Sampler:
    """Start it once; read latest() and samples(since) from any thread.

    `nvml`: "auto" imports pynvml (nvidia-ml-py) when installed; None disables GPU sampling; a
    module object stands in for pynvml (tests). `allocator`: reads this process's CUDA allocator
    (the sample's "torch" field); None where there is none to read (the CPU). `disk_path`: a
    folder on the volume whose writes to count (the outputs).
    """

    def __init__(self, interval_s: float = 1.0, log_path: Path | None = None, log_max_bytes: int = 10 * 2**20,
                 log_backups: int = 5, ring_seconds: float = 3600, disk_path: Path = Path("outputs"),
                 allocator: Callable[[], AllocatorReading | None] | None = None, nvml: Any = "auto"):
        if interval_s <= 0:
            raise ValueError(f"interval_s must be positive, got {interval_s}")
        self.interval_s = interval_s
        self._ring: deque[Sample] = deque(maxlen=max(1, math.ceil(ring_seconds / interval_s)))
        self._file = RotatingJsonl(Path(log_path), log_max_bytes, log_backups) if log_path is not None else None
        self._disk_path = Path(disk_path)
        self._allocator = allocator
        self._nvml_choice = nvml
        self._process = psutil.Process()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._healthy = True
        self._last_error: str | None = None
        self._failing: tuple[str, ...] = ()  # the sources whose errors were logged
        # Resolved by start(): which GPUs, disk and cgroup files there are to read.
        self._nvml: Any = None
        self._gpus: list[_Gpu] = []
        self._disk: str | None = None
        self._cgroup: tuple[Path, Path] | None = None
        self._cpu_times: list[tuple[float, float]] = []

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Find the sources (NVML init happens here, not in the thread) and start sampling; the
        first sample comes one interval later, so that its CPU percentages cover a whole interval."""
        if self._thread is not None:
            return
        self._nvml, self._gpus = self._open_nvml()
        self._disk = _block_device(self._disk_path)
        self._cgroup = _cgroup_memory_files()
        self._cpu_times = [_busy_total(times) for times in psutil.cpu_times(percpu=True)]
        self._process.cpu_percent()  # psutil measures from this call on
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="monitor-sampler", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop and join the thread, then release NVML and the log file."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stop.set()
        thread.join(timeout_s)
        if thread.is_alive():
            # Most likely an NVML call hanging on a broken GPU: leave it what it is using.
            log.warning("monitor: the sampler thread did not stop within %.0f s", timeout_s)
            return
        if self._nvml is not None:
            try:
                self._nvml.nvmlShutdown()
            except self._nvml.NVMLError as error:
                log.debug("NVML shutdown: %s", error)
            self._nvml = None
        if self._file is not None:
            self._file.close()

    # ------------------------------------------------------------------ reading

    def latest(self) -> Sample | None:
        """The newest sample (shared: do not modify it), or None before the first one."""
        with self._lock:
            return self._ring[-1] if self._ring else None

    def samples(self, since: float | None = None) -> list[Sample]:
        """The ring buffer, oldest first; with `since`, only samples whose ts is later."""
        with self._lock:
            samples = list(self._ring)
        return samples if since is None else [sample for sample in samples if sample["ts"] > since]

    @property
    def healthy(self) -> bool:
        """False while the GPU cannot be read (NVML or the CUDA allocator failing at run time: a
        lost GPU); True again once a later sample reads it."""
        return self._healthy

    @property
    def last_error(self) -> str | None:
        """The most recent failure, kept after recovery for the operator to see."""
        return self._last_error

    # ------------------------------------------------------------------ the thread

    def _run(self) -> None:
        next_at = time.monotonic() + self.interval_s
        while not self._stop.wait(max(0.0, next_at - time.monotonic())):
            sample = self._collect()
            with self._lock:
                self._ring.append(sample)
            if self._file is not None:
                self._file.write(sample)
            # A fixed cadence that does not drift by the sampling time; after a stall (a suspended
            # VM) it restarts from now instead of catching up in a burst.
            next_at = max(next_at + self.interval_s, time.monotonic())

    def _collect(self) -> Sample:
        sample: Sample = dict.fromkeys(SAMPLE_KEYS)  # type: ignore[assignment]  # every key, filled below
        sample["ts"] = round(time.time(), 3)
        errors: dict[str, str] = {}
        readers: Sequence[tuple[str, Callable[[], dict[str, Any]]]] = (
            ("cpu", self._read_cpu), ("process", self._read_process), ("memory", self._read_memory),
            ("disk", self._read_disk), ("cgroup", self._read_cgroup), ("nvml", self._read_gpus),
            ("torch", self._read_torch))
        for source, read in readers:
            try:
                sample.update(read())
            except Exception as error:  # noqa: BLE001 - one broken source must not silence the others
                errors[source] = f"{source}: {type(error).__name__}: {error}"
        self._note_health(errors)
        return sample

    def _note_health(self, errors: dict[str, str]) -> None:
        self._healthy = not errors.keys() & GPU_SOURCES
        if errors:
            self._last_error = "; ".join(errors.values())
        failing = tuple(errors)
        if failing != self._failing:  # log changes, not every second of a lasting failure
            if failing:
                log.warning("monitor: %s (sampling goes on; logged again only when this changes)",
                            self._last_error)
            else:
                log.info("monitor: every source reads again")
            self._failing = failing

    # ------------------------------------------------------------------ host

    def _read_cpu(self) -> dict[str, Any]:
        # Computed from our own previous reading, not psutil.cpu_percent(), whose module-level
        # state any other caller in the process would reset.
        now = [_busy_total(times) for times in psutil.cpu_times(percpu=True)]
        deltas = [(busy - busy0, total - total0) for (busy0, total0), (busy, total) in zip(self._cpu_times, now)]
        self._cpu_times = now
        per_core = [_percent(busy, total) for busy, total in deltas]
        return {"cpu_percent": _percent(sum(busy for busy, _ in deltas), sum(total for _, total in deltas)),
                "cpu_percent_per_core": per_core,
                "cpu_peak_core_percent": max(per_core, default=None)}

    def _read_process(self) -> dict[str, Any]:
        process = self._process
        with process.oneshot():
            return {"process_cpu_percent": round(process.cpu_percent(), 1),
                    "process_rss_bytes": process.memory_info().rss,
                    "process_threads": process.num_threads(),
                    "process_open_fds": process.num_fds() if hasattr(process, "num_fds") else None}

    def _read_memory(self) -> dict[str, Any]:
        memory = psutil.virtual_memory()
        return {"system_memory_used_bytes": memory.used, "system_memory_available_bytes": memory.available,
                "system_memory_total_bytes": memory.total}

    def _read_disk(self) -> dict[str, Any]:
        if self._disk is None:
            return {}
        counters = (psutil.disk_io_counters(perdisk=True) or {}).get(self._disk)
        return {"disk_write_bytes": counters.write_bytes} if counters else {}

    def _read_cgroup(self) -> dict[str, Any]:
        if self._cgroup is None:
            return {}
        limit_file, usage_file = self._cgroup
        limit = limit_file.read_text().strip()
        if limit == "max" or int(limit) >= UNLIMITED:
            return {}
        return {"cgroup_memory_limit_bytes": int(limit), "cgroup_memory_usage_bytes": int(usage_file.read_text())}

    # ------------------------------------------------------------------ GPU

    def _open_nvml(self) -> tuple[Any, list[_Gpu]]:
        nvml = self._nvml_choice
        if nvml is None:
            return None, []
        if isinstance(nvml, str):
            try:
                import pynvml as nvml
            except ImportError:
                log.info("monitor: nvidia-ml-py is not installed; no GPU sampling")
                return None, []
        try:
            nvml.nvmlInit()
        except nvml.NVMLError as error:  # no driver: a CPU machine
            log.info("monitor: NVML unavailable (%s); no GPU sampling", error)
            return None, []
        try:
            handles = _visible_handles(nvml)
            driver = _driver_version(nvml)
            gpus = [_Gpu(index, handle, nvml.nvmlDeviceGetName(handle), hasattr(nvml, "nvmlMemory_v2"), driver)
                    for index, handle in enumerate(handles)]
        except nvml.NVMLError as error:
            log.warning("monitor: NVML could not list the GPUs (%s); no GPU sampling", error)
            gpus = []
        if not gpus:
            nvml.nvmlShutdown()
            return None, []
        log.info("monitor: sampling %s", ", ".join(f"GPU {gpu.index} ({gpu.name})" for gpu in gpus))
        return nvml, gpus

    def _read_gpus(self) -> dict[str, Any]:
        if self._nvml is None:
            return {}
        return {"gpu": [self._read_gpu(gpu) for gpu in self._gpus]}

    def _read_gpu(self, gpu: _Gpu) -> dict[str, Any]:
        nvml = self._nvml
        memory = self._memory_info(gpu)
        utilization = self._optional(nvml.nvmlDeviceGetUtilizationRates, gpu.handle)
        power_mw = self._optional(nvml.nvmlDeviceGetPowerUsage, gpu.handle)
        return {
            "index": gpu.index,
            "name": gpu.name,
            "driver_version": gpu.driver_version,
            "utilization_ratio": None if utilization is None else utilization.gpu / 100,
            "memory_used_bytes": memory.used,
            "memory_total_bytes": memory.total,
            "memory_reserved_bytes": memory.reserved if gpu.memory_v2 else None,
            "temperature_celsius": self._optional(nvml.nvmlDeviceGetTemperature, gpu.handle,
                                                  nvml.NVML_TEMPERATURE_GPU),
            "power_watts": None if power_mw is None else power_mw / 1000,
            "sm_clock_mhz": self._optional(nvml.nvmlDeviceGetClockInfo, gpu.handle, nvml.NVML_CLOCK_SM),
        }

    def _memory_info(self, gpu: _Gpu) -> Any:
        """Version 2 where the driver has it: its `used` leaves out the memory the driver reserves,
        which it reports apart; version 1 counts that in `used`."""
        nvml = self._nvml
        if gpu.memory_v2:
            try:
                return nvml.nvmlDeviceGetMemoryInfo(gpu.handle, version=nvml.nvmlMemory_v2)
            except nvml.NVMLError:
                memory = nvml.nvmlDeviceGetMemoryInfo(gpu.handle)  # raises if the GPU itself is gone
                gpu.memory_v2 = False
                return memory
        return nvml.nvmlDeviceGetMemoryInfo(gpu.handle)

    def _optional(self, read: Callable[..., Any], *args: Any) -> Any:
        """A reading this GPU does not offer (power on some boards, utilization of a MIG slice) is
        null, not an error."""
        try:
            return read(*args)
        except self._nvml.NVMLError as error:
            if error.value == self._nvml.NVML_ERROR_NOT_SUPPORTED:
                return None
            raise

    def _read_torch(self) -> dict[str, Any]:
        return {"torch": self._allocator()} if self._allocator is not None else {}


# ---------------------------------------------------------------------- helpers


def _busy_total(times: Any) -> tuple[float, float]:
    """(busy, total) CPU seconds the way psutil counts them: guest time is already inside user
    time, and waiting for I/O is idle."""
    total = sum(times) - getattr(times, "guest", 0.0) - getattr(times, "guest_nice", 0.0)
    return total - times.idle - getattr(times, "iowait", 0.0), total


def _percent(busy: float, total: float) -> float:
    return round(min(max(100 * busy / total, 0.0), 100.0), 1) if total > 0 else 0.0


def _driver_version(nvml: Any) -> str | None:
    """The driver's version string; None where this NVML cannot tell (the samples still flow)."""
    try:
        version = nvml.nvmlSystemGetDriverVersion()
    except nvml.NVMLError:
        return None
    return version.decode() if isinstance(version, bytes) else str(version)


def _visible_handles(nvml: Any) -> list[Any]:
    """The GPUs CUDA shows this process, in CUDA's order, so that a GPU's position is torch's
    cuda:<index>: the CUDA_VISIBLE_DEVICES entries (indices or UUIDs) when set, else all of NVML's
    (whose PCI order matches CUDA's on machines with one model of GPU)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return [nvml.nvmlDeviceGetHandleByIndex(index) for index in range(nvml.nvmlDeviceGetCount())]
    handles = []
    for entry in visible.split(","):
        entry = entry.strip()
        try:
            handles.append(nvml.nvmlDeviceGetHandleByIndex(int(entry)) if entry.isdigit()
                           else nvml.nvmlDeviceGetHandleByUUID(entry))
        except nvml.NVMLError:
            break  # CUDA, too, ignores everything from the first entry it cannot resolve ("", "-1")
    return handles


def _block_device(folder: Path) -> str | None:
    """The kernel's name for the block device holding `folder` (a key of psutil's per-disk
    counters), found through /sys/dev/block/MAJOR:MINOR; None off Linux and for filesystems with
    no block device of their own (overlay, tmpfs, NFS)."""
    if not sys.platform.startswith("linux"):
        return None
    folder = folder.resolve()
    while not folder.exists():  # outputs/ may not exist yet: its parent is on the same volume
        folder = folder.parent
    try:
        device = folder.stat().st_dev
        link = Path(f"/sys/dev/block/{os.major(device)}:{os.minor(device)}")
        name = link.resolve(strict=True).name
    except OSError:  # no such link, or no permission to look
        return None
    return name if name in (psutil.disk_io_counters(perdisk=True) or {}) else None


def _cgroup_memory_files() -> tuple[Path, Path] | None:
    """(limit file, usage file) of this process's memory cgroup: v2's memory.max/memory.current,
    else v1's memory.limit_in_bytes/memory.usage_in_bytes. Inside a container /proc/self/cgroup
    names "/" and the files sit at the root of /sys/fs/cgroup; on a host they sit under the path
    it names."""
    try:
        lines = PROC_SELF_CGROUP.read_text().splitlines()
    except OSError:
        return None
    candidates = []
    for line in lines:
        hierarchy, controllers, path = line.split(":", 2)
        if hierarchy == "0" and not controllers:
            folders, names = (CGROUP_ROOT / path.lstrip("/"), CGROUP_ROOT), ("memory.max", "memory.current")
        elif "memory" in controllers.split(","):
            v1 = CGROUP_ROOT / "memory"
            folders, names = (v1 / path.lstrip("/"), v1), ("memory.limit_in_bytes", "memory.usage_in_bytes")
        else:
            continue
        candidates += [(folder / names[0], folder / names[1]) for folder in folders]
    return next(((limit, usage) for limit, usage in candidates if limit.is_file() and usage.is_file()), None)


# ---------------------------------------------------------------------- overhead


def measure_overhead(seconds: float, interval_s: float) -> str:
    """Run a sampler (NVML if present, log file included) in this otherwise idle process and
    report the process's CPU time per wall second, as a share of one core."""
    with tempfile.TemporaryDirectory() as folder:
        sampler = Sampler(interval_s, log_path=Path(folder) / "monitor.jsonl")
        sampler.start()
        cpu_start, wall_start = time.process_time(), time.monotonic()
        time.sleep(seconds)
        cpu_s, wall_s = time.process_time() - cpu_start, time.monotonic() - wall_start
        count, latest = len(sampler.samples()), sampler.latest()
        sampler.stop()
    gpus = len(latest["gpu"]) if latest and latest["gpu"] else 0
    return (f"sampler overhead: {100 * cpu_s / wall_s:.3f}% of one core at {1 / interval_s:g} Hz "
            f"({1000 * cpu_s:.0f} ms CPU in {wall_s:.1f} s, {count} samples, "
            f"{1000 * cpu_s / max(count, 1):.2f} ms each; {gpus} GPU(s) via NVML)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m monitor.sampler", description=__doc__.split("\n\n")[0])
    parser.add_argument("--measure-overhead", type=float, required=True, metavar="SECONDS",
                        help="sample for this long in an idle process and print the CPU cost")
    parser.add_argument("--interval", type=float, default=1.0, metavar="S", help="seconds between samples")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    print(measure_overhead(args.measure_overhead, args.interval))


if __name__ == "__main__":
    main()
