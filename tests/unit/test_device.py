"""lama.device on the CPU: what the service and the monitor ask of the GPU, answered without one,
and the failures a GPU raises (simulated) turned into the engine's two errors."""

import pytest
import torch

from lama.device import Device, GpuFailure, GpuOutOfMemory
from lama.errors import EngineError


class Job:
    """Raises the given errors on its first calls, then returns how many calls it took."""

    def __init__(self, *errors: BaseException):
        self.errors, self.calls = list(errors), 0

    def __call__(self) -> int:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return self.calls


def out_of_memory() -> torch.cuda.OutOfMemoryError:
    return torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def test_out_of_memory_once_frees_the_cache_and_runs_again(monkeypatch):
    events = []
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: events.append("empty_cache"))
    job = Job(out_of_memory())
    assert Device.cpu().run(job, on_retry=lambda: events.append("retry")) == 2
    assert events == ["empty_cache", "retry"]


def test_out_of_memory_twice_is_gpu_out_of_memory(monkeypatch):
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    job = Job(out_of_memory(), out_of_memory())
    with pytest.raises(GpuOutOfMemory):
        Device.cpu().run(job)
    assert job.calls == 2


@pytest.mark.parametrize("error", [RuntimeError("CUDA error: an illegal memory access was encountered\nmore"),
                                   RuntimeError("cuFFT error: CUFFT_INTERNAL_ERROR")])
def test_a_cuda_failure_is_gpu_failure_with_its_first_line(error):
    with pytest.raises(GpuFailure) as failure:
        Device.cpu().run(Job(error))
    assert str(failure.value) == f"RuntimeError: {str(error).splitlines()[0]}" and failure.value.__cause__ is error


def test_other_errors_pass_through_untouched():
    bug = ValueError("CUDA error")  # the words alone do not make a GPU failure
    with pytest.raises(ValueError) as raised:
        Device.cpu().run(Job(bug))
    assert raised.value is bug


def test_on_the_cpu_there_is_nothing_to_measure_limit_or_probe():
    device = Device.cpu()
    device.limit_memory(0.5)
    assert device.budget_bytes(0) is None and device.peak_bytes() is None
    assert device.memory_report() is None and device.allocator_reading() is None
    assert device.peak_above_baseline(lambda: None) is None and device.gpu_name() is None
    device.probe()  # nothing to fail
    assert str(device) == "cpu" and device.index is None and device.precision("auto") == "fp32"


def test_unknown_devices_and_precisions_are_refused():
    with pytest.raises(EngineError, match="unknown device 'tpu'"):
        Device.resolve("tpu")
    with pytest.raises(EngineError, match="unknown precision 'int4'"):
        Device.cpu().precision("int4")
