"""The resource sampler as the service uses it: real psutil, NVML absent or replaced by a fake
module with NVML's own units, sampling fast (50 ms or less) so that the tests take moments."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from monitor import sampler as sampler_module
from monitor.metrics import ServiceMetrics
from monitor.sampler import SAMPLE_KEYS, Sampler
from support.nvml import FakeNvml

FAST = 0.02  # seconds between samples
GiB = 2**30


def wait_until(condition: Callable[[], object], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout_s} s")
        time.sleep(0.005)


EXPECTED_GPUS = [
    {"index": 0, "name": "NVIDIA A10", "utilization_ratio": 0.87, "memory_used_bytes": 6_800_000_000,
     "memory_total_bytes": 24 * GiB, "memory_reserved_bytes": 300 * 2**20, "temperature_celsius": 64,
     "driver_version": "550.54.15",
     "power_watts": 148.25, "sm_clock_mhz": 1695},
    {"index": 1, "name": "NVIDIA L4", "utilization_ratio": 0.05, "memory_used_bytes": 2**30,
     "memory_total_bytes": 22 * GiB, "memory_reserved_bytes": 0, "temperature_celsius": 41,
     "driver_version": "550.54.15", "power_watts": None, "sm_clock_mhz": 2040},
]


@pytest.fixture
def make_sampler(tmp_path: Path) -> Iterator[Callable[..., Sampler]]:
    """Started samplers (fast, NVML off unless given, outputs in tmp), stopped after the test."""
    started: list[Sampler] = []

    def make(**kwargs) -> Sampler:
        kwargs = {"interval_s": FAST, "nvml": None, "disk_path": tmp_path, **kwargs}
        sampler = Sampler(**kwargs)
        sampler.start()
        started.append(sampler)
        return sampler

    yield make
    for sampler in started:
        sampler.stop()


@pytest.fixture(autouse=True)
def all_gpus_visible(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


def first_sample(sampler: Sampler) -> dict:
    wait_until(sampler.latest)
    return sampler.latest()


# ------------------------------------------------------------------ without a GPU


def test_without_nvml_the_host_fields_are_real_and_gpu_is_null(make_sampler):
    before = time.time()
    sample = first_sample(make_sampler(allocator=None))

    assert list(sample) == list(SAMPLE_KEYS)
    assert before < sample["ts"] <= time.time()
    assert sample["gpu"] is None and sample["torch"] is None
    per_core = sample["cpu_percent_per_core"]
    assert len(per_core) == psutil.cpu_count()
    assert all(0 <= value <= 100 for value in [*per_core, sample["cpu_percent"]])
    assert sample["cpu_peak_core_percent"] == max(per_core)
    assert sample["process_rss_bytes"] > 10 * 2**20  # at least the interpreter
    assert sample["process_threads"] >= 2  # this one and the sampler's
    assert sample["process_open_fds"] > 0
    memory = (sample["system_memory_used_bytes"], sample["system_memory_available_bytes"])
    assert all(0 < value < sample["system_memory_total_bytes"] for value in memory)
    assert sample["disk_write_bytes"] is None or sample["disk_write_bytes"] >= 0
    json.dumps(sample)  # JSON-ready as it is


def test_process_cpu_shows_a_busy_thread(make_sampler):
    sampler = make_sampler(interval_s=0.05)
    first_sample(sampler)
    # Busy in C with the GIL released (hashlib does so for large buffers): a pure-Python loop
    # would hold the GIL and starve the sampler's thread, whose /proc reads each wait for it,
    # so that on a 2-core box no sample landed in the window at times.
    block = bytes(1 << 20)
    busy_until = time.monotonic() + 0.4
    while time.monotonic() < busy_until:
        hashlib.sha256(block).digest()
    recent = sampler.samples(since=time.time() - 0.3)
    assert max(sample["process_cpu_percent"] for sample in recent) > 30
    assert max(sample["cpu_peak_core_percent"] for sample in recent) > 30


def test_a_machine_without_an_nvidia_driver_is_healthy_with_gpu_null(make_sampler):
    sampler = make_sampler(nvml=FakeNvml(init_error=9))  # what nvmlInit says without a driver
    sample = first_sample(sampler)
    assert sample["gpu"] is None and sample["process_rss_bytes"] > 0
    assert sampler.healthy and sampler.last_error is None


# ------------------------------------------------------------------ GPUs through (fake) NVML


def test_gpu_fields_in_base_units(make_sampler):
    fake = FakeNvml()
    sampler = make_sampler(nvml=fake)
    assert first_sample(sampler)["gpu"] == EXPECTED_GPUS  # percent -> ratio, mW -> W, unsupported -> null
    assert sampler.healthy
    sampler.stop()
    assert not fake.initialized  # stop() shut NVML down


def test_a_driver_without_memory_info_v2_reports_v1_used_and_no_reserved(make_sampler):
    gpu = first_sample(make_sampler(nvml=FakeNvml(memory_v2=False)))["gpu"][0]
    assert gpu["memory_used_bytes"] == 6_800_000_000 + 300 * 2**20
    assert gpu["memory_reserved_bytes"] is None
    assert gpu["memory_total_bytes"] == 24 * GiB


@pytest.mark.parametrize(("visible", "names"), [
    ("1", ["NVIDIA L4"]),
    ("GPU-bbbb,0", ["NVIDIA L4", "NVIDIA A10"]),
    ("0,7,1", ["NVIDIA A10"]),  # CUDA stops at the first entry it cannot resolve
    ("", None),
    ("-1", None),
])
def test_only_the_gpus_cuda_shows_are_sampled_indexed_as_cuda_does(make_sampler, monkeypatch, visible, names):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    gpus = first_sample(make_sampler(nvml=FakeNvml()))["gpu"]
    if names is None:
        assert gpus is None
    else:
        assert [(gpu["index"], gpu["name"]) for gpu in gpus] == list(enumerate(names))


def test_a_lost_gpu_degrades_health_and_sampling_goes_on(make_sampler, caplog):
    fake = FakeNvml()
    sampler = make_sampler(nvml=fake)
    first_sample(sampler)
    with caplog.at_level(logging.WARNING, logger="monitor.sampler"):
        fake.lost = True
        wait_until(lambda: not sampler.healthy)
        lost_at = sampler.latest()["ts"]
        wait_until(lambda: len(sampler.samples(since=lost_at)) >= 5)  # the thread lives on

    assert "GPU is lost" in sampler.last_error
    after = sampler.samples(since=lost_at)
    assert all(sample["gpu"] is None and sample["process_rss_bytes"] > 0 for sample in after)
    assert len([record for record in caplog.records if "GPU is lost" in record.getMessage()]) == 1

    fake.lost = False  # the GPU is back (a driver reload)
    wait_until(lambda: sampler.healthy)
    assert sampler.latest()["gpu"] == EXPECTED_GPUS
    assert "GPU is lost" in sampler.last_error  # kept for the operator


def test_metrics_gauges_follow_the_sampler(make_sampler):
    sampler = make_sampler(nvml=FakeNvml())
    metrics = ServiceMetrics(lambda: 0, lambda: 1, lambda: 1, latest_sample=sampler.latest)
    first_sample(sampler)
    values = {(sample.name, tuple(sample.labels.items())): sample.value
              for family in text_string_to_metric_families(metrics.render().decode())
              for sample in family.samples}
    assert values[("inpaint_gpu_power_watts", (("gpu", "0"),))] == 148.25
    assert values[("inpaint_gpu_utilization_ratio", (("gpu", "1"),))] == 0.05
    assert values[("inpaint_system_memory_used_bytes", ())] > 0


# ------------------------------------------------------------------ the container's memory


@pytest.mark.parametrize(("proc_cgroup", "files", "expected"), [
    ("0::/\n", {"memory.max": "1073741824\n", "memory.current": "52428800\n"}, (2**30, 50 * 2**20)),
    ("0::/\n", {"memory.max": "max\n", "memory.current": "52428800\n"}, (None, None)),
    ("4:memory:/docker/abc\n0::/\n",
     {"memory/docker/abc/memory.limit_in_bytes": "2147483648\n", "memory/docker/abc/memory.usage_in_bytes": "7\n"},
     (2 * GiB, 7)),
    ("4:memory:/\n", {"memory/memory.limit_in_bytes": "9223372036854771712\n",
                      "memory/memory.usage_in_bytes": "7\n"}, (None, None)),
    ("0::/\n", {}, (None, None)),  # no memory controller to read
])
def test_cgroup_memory_limit_and_usage(make_sampler, monkeypatch, tmp_path, proc_cgroup, files, expected):
    root = tmp_path / "cgroup"
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    (tmp_path / "proc-self-cgroup").write_text(proc_cgroup)
    monkeypatch.setattr(sampler_module, "CGROUP_ROOT", root)
    monkeypatch.setattr(sampler_module, "PROC_SELF_CGROUP", tmp_path / "proc-self-cgroup")
    sample = first_sample(make_sampler())
    assert (sample["cgroup_memory_limit_bytes"], sample["cgroup_memory_usage_bytes"]) == expected


def test_a_failing_host_reading_is_reported_but_leaves_the_gpu_healthy(make_sampler, monkeypatch, tmp_path):
    (tmp_path / "memory.max").write_text("garbage\n")
    (tmp_path / "memory.current").write_text("7\n")
    (tmp_path / "proc-self-cgroup").write_text("0::/\n")
    monkeypatch.setattr(sampler_module, "CGROUP_ROOT", tmp_path)
    monkeypatch.setattr(sampler_module, "PROC_SELF_CGROUP", tmp_path / "proc-self-cgroup")
    sampler = make_sampler(nvml=FakeNvml())
    sample = first_sample(sampler)
    assert sample["cgroup_memory_limit_bytes"] is None and sample["gpu"] == EXPECTED_GPUS
    assert sampler.healthy  # readiness is about the GPU
    assert sampler.last_error.startswith("cgroup: ValueError")


# ------------------------------------------------------------------ keeping samples


def test_the_log_rotates_within_its_bounds(make_sampler, tmp_path):
    log_path = tmp_path / "logs" / "monitor.jsonl"
    sampler = make_sampler(interval_s=0.005, log_path=log_path, log_max_bytes=2000, log_backups=2)
    wait_until(lambda: len(sampler.samples()) >= 40)  # ~20 kB of lines, ten times one file
    sampler.stop()

    files = sorted(log_path.parent.iterdir())
    assert [file.name for file in files] == ["monitor.jsonl", "monitor.jsonl.1", "monitor.jsonl.2"]
    assert all(file.stat().st_size <= 2000 for file in files)
    lines = [line for file in files for line in file.read_text().splitlines()]
    assert all(list(json.loads(line)) == list(SAMPLE_KEYS) for line in lines)
    assert json.loads(log_path.read_text().splitlines()[-1]) == sampler.latest()


def test_the_ring_buffer_keeps_the_last_ring_seconds(make_sampler):
    sampler = make_sampler(interval_s=0.01, ring_seconds=0.1)  # room for 10 samples
    first = first_sample(sampler)
    wait_until(lambda: sampler.samples()[0]["ts"] > first["ts"])  # the first one fell out
    samples = sampler.samples()
    assert len(samples) == 10
    assert [sample["ts"] for sample in samples] == sorted(sample["ts"] for sample in samples)


def test_samples_since_returns_the_later_ones(make_sampler):
    sampler = make_sampler()
    wait_until(lambda: len(sampler.samples()) >= 4)
    sampler.stop()
    samples = sampler.samples()
    middle = samples[1]["ts"]
    assert sampler.samples(since=middle) == samples[2:]
    assert sampler.samples(since=samples[-1]["ts"]) == []
    assert sampler.samples(since=None) == samples


def test_stop_joins_at_once_even_mid_interval(make_sampler):
    def samplers() -> int:
        return sum(thread.name == "monitor-sampler" for thread in threading.enumerate())

    before = samplers()
    sampler = make_sampler(interval_s=30)
    assert samplers() == before + 1
    started = time.monotonic()
    sampler.stop()
    assert time.monotonic() - started < 1
    assert samplers() == before
    assert sampler.latest() is None  # nothing sampled before the first interval ended
