"""A stand-in for NVML (nvidia-ml-py's `pynvml`) for a live server on a machine without a GPU:
put this folder first on the server's PYTHONPATH and its resource sampler reads one GPU here.
The GPU reads as lost (NVML_ERROR_GPU_IS_LOST, what a GPU that fell off the bus gives) while the
file named by $LAMA_FAKE_NVML_LOST exists, so that a test can make a running replica's /readyz
turn 503 the way a real GPU failure does, through the app's own code (tests/test_haproxy.py).
Only what monitor/sampler.py calls is here."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

NVML_ERROR_NOT_FOUND = 6
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_GPU_IS_LOST = 15
NVML_TEMPERATURE_GPU = 0
NVML_CLOCK_SM = 1
nvmlMemory_v2 = 0x02000028
TOTAL_BYTES = 80 * 2**30


class NVMLError(Exception):
    def __init__(self, value: int):
        super().__init__(value)
        self.value = value

    def __str__(self) -> str:
        return {NVML_ERROR_NOT_FOUND: "Not Found", NVML_ERROR_GPU_IS_LOST: "GPU is lost"}.get(self.value, "Unknown")


def _check() -> None:
    flag = os.environ.get("LAMA_FAKE_NVML_LOST")
    if flag and Path(flag).exists():
        raise NVMLError(NVML_ERROR_GPU_IS_LOST)


def nvmlInit() -> None:
    pass


def nvmlShutdown() -> None:
    pass


def nvmlSystemGetDriverVersion() -> str:
    return "fake"


def nvmlDeviceGetCount() -> int:
    return 1


def nvmlDeviceGetHandleByIndex(index: int) -> int:
    if index != 0:
        raise NVMLError(NVML_ERROR_NOT_FOUND)
    return 0


def nvmlDeviceGetHandleByUUID(uuid: str) -> int:
    raise NVMLError(NVML_ERROR_NOT_FOUND)


def nvmlDeviceGetName(handle: int) -> str:
    return "Fake GPU"


def nvmlDeviceGetMemoryInfo(handle: int, version: int | None = None) -> SimpleNamespace:
    _check()
    return SimpleNamespace(total=TOTAL_BYTES, used=2**30, free=TOTAL_BYTES - 2**30, reserved=0)


def nvmlDeviceGetUtilizationRates(handle: int) -> SimpleNamespace:
    _check()
    return SimpleNamespace(gpu=0, memory=0)


def nvmlDeviceGetPowerUsage(handle: int) -> int:
    _check()
    return 60_000  # milliwatts


def nvmlDeviceGetTemperature(handle: int, sensor: int) -> int:
    _check()
    return 40


def nvmlDeviceGetClockInfo(handle: int, clock: int) -> int:
    _check()
    return 1500
