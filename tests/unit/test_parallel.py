"""lama.parallel.cores: the cores a process may use, its cgroup's CPU quota included (a container
with a CPU limit sees every core of its node)."""

from __future__ import annotations

import os

import pytest

from lama import parallel


@pytest.fixture
def cpu_max(tmp_path, monkeypatch):
    """Write the cgroup's cpu.max as a container's would read."""
    path = tmp_path / "cpu.max"
    monkeypatch.setattr(parallel, "CGROUP_CPU_MAX", path)

    def write(text: str | None) -> None:
        if text is not None:
            path.write_text(text)
        parallel.cpu_quota.cache_clear()

    yield write
    parallel.cpu_quota.cache_clear()


def test_a_cpu_quota_bounds_the_cores(cpu_max):
    usable = len(os.sched_getaffinity(0))
    cpu_max("100000 100000\n")
    assert parallel.cores() == 1
    cpu_max("150000 100000\n")  # one and a half cores: two threads can use them
    assert parallel.cores() == min(usable, 2)
    cpu_max(f"{(usable + 4) * 100000} 100000\n")  # a quota above the affinity: the affinity
    assert parallel.cores() == usable


@pytest.mark.parametrize("text", [None, "max 100000\n", "garbage\n", ""])
def test_without_a_quota_the_affinity_counts(cpu_max, text):
    cpu_max(text)
    assert parallel.cpu_quota() is None
    assert parallel.cores() == len(os.sched_getaffinity(0))
