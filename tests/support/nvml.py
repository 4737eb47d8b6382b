"""A stand-in for pynvml: two GPUs answering in NVML's units."""

from __future__ import annotations

from types import SimpleNamespace

GiB = 2**30


class FakeNVMLError(Exception):
    def __init__(self, value: int):
        super().__init__(value)
        self.value = value

    def __str__(self) -> str:
        messages = {2: "Invalid Argument", 3: "Not Supported", 9: "Driver Not Loaded", 13: "Function Not Found",
                    15: "GPU is lost"}
        return messages[self.value]


class FakeNvml:
    """Stands in for pynvml: two GPUs answering in NVML's units (percent, bytes, °C, milliwatts, MHz).
    GPU 1 cannot report its power, like some boards; `lost` makes every reading fail like a GPU
    that fell off the bus; `memory_v2=False` is a driver without nvmlDeviceGetMemoryInfo_v2."""

    NVMLError = FakeNVMLError
    NVML_ERROR_NOT_SUPPORTED = 3
    NVML_TEMPERATURE_GPU = 0
    NVML_CLOCK_SM = 1
    nvmlMemory_v2 = 0x02000028
    NAMES = ("NVIDIA A10", "NVIDIA L4")
    UUIDS = ("GPU-aaaa", "GPU-bbbb")

    def __init__(self, memory_v2: bool = True, init_error: int | None = None):
        self.memory_v2 = memory_v2
        self.init_error = init_error
        self.lost = False
        self.initialized = False

    def nvmlInit(self) -> None:
        if self.init_error is not None:
            raise FakeNVMLError(self.init_error)
        self.initialized = True

    def nvmlShutdown(self) -> None:
        self.initialized = False

    def nvmlDeviceGetCount(self) -> int:
        return len(self.NAMES)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        if index >= len(self.NAMES):
            raise FakeNVMLError(2)
        return index

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> int:
        if uuid not in self.UUIDS:
            raise FakeNVMLError(2)
        return self.UUIDS.index(uuid)

    def nvmlDeviceGetName(self, handle: int) -> str:
        return self.NAMES[handle]

    def nvmlSystemGetDriverVersion(self) -> str:
        return "550.54.15"

    def _check(self) -> None:
        if self.lost:
            raise FakeNVMLError(15)

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> SimpleNamespace:
        self._check()
        return SimpleNamespace(gpu=(87, 5)[handle], memory=40)

    def nvmlDeviceGetMemoryInfo(self, handle: int, version: int | None = None) -> SimpleNamespace:
        self._check()
        total, used, reserved = (24 * GiB, 6_800_000_000, 300 * 2**20) if handle == 0 else (22 * GiB, 2**30, 0)
        if version is None:  # version 1 counts the driver's reserve as used
            return SimpleNamespace(total=total, free=total - used - reserved, used=used + reserved)
        if not self.memory_v2:
            raise FakeNVMLError(13)
        assert version == self.nvmlMemory_v2
        return SimpleNamespace(version=version, total=total, reserved=reserved, free=total - used - reserved,
                               used=used)

    def nvmlDeviceGetTemperature(self, handle: int, sensor: int) -> int:
        self._check()
        assert sensor == self.NVML_TEMPERATURE_GPU
        return (64, 41)[handle]

    def nvmlDeviceGetPowerUsage(self, handle: int) -> int:
        self._check()
        if handle == 1:
            raise FakeNVMLError(3)
        return 148_250

    def nvmlDeviceGetClockInfo(self, handle: int, clock: int) -> int:
        self._check()
        assert clock == self.NVML_CLOCK_SM
        return (1695, 2040)[handle]
